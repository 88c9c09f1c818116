"""Reference outputs of a tiny random Hugging Face `Dinov2Model` (transformers 5.24) for the
DINOv2 parity test: weights under their HF names, an input, and the outputs.

The input is at the position grid's own size, so no position-embedding resize happens
(transformers resizes with `size=`, the official model with `scale_factor=(n+0.1)/√N`; ours
follows the official one and is checked against PyTorch's bicubic separately).

    pip install torch transformers safetensors
    python make_dinov2_tiny.py
"""
import torch
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model

torch.manual_seed(0)
cfg = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                   patch_size=4, image_size=12, layer_norm_eps=1e-6, hidden_act="gelu")
model = Dinov2Model(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        p.copy_(torch.randn_like(p) * (0.5 if p.dim() > 1 else 0.2) + (1.0 if "lambda1" in name or name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "layernorm.weight" else 0.0))
    x = torch.randn(2, 3, 12, 12)
    out = model(pixel_values=x, output_hidden_states=True)
t = {k: v.contiguous() for k, v in model.state_dict().items()}
t["test.pixel_values"] = x
t["test.last_hidden_state"] = out.last_hidden_state.contiguous()
for i, h in enumerate(out.hidden_states):
    t[f"test.hidden_states.{i}"] = h.contiguous()
save_file(t, "dinov2_tiny.safetensors")
print({k: tuple(v.shape) for k, v in t.items() if k.startswith("test")})
