"""transformers reference for `adt-bench bench clip`: CLIP image-tower throughput on this CPU.

Builds a `transformers.CLIPModel` of the requested architecture with seeded random weights
(no download), saves it with `save_pretrained` so that adt-bench loads the very same weights,
and times `get_image_features` on seeded random pixels. Writes into OUT:
    model/            config.json + model.safetensors
    pixels.safetensors   the input  [batch, 3, 224, 224]
    embeds.safetensors   transformers' image embeddings of it
and prints one JSON line: {"images_per_s", "threads", "batch", "torch", "transformers"}.

Set-up (once, in a virtual environment): pip install torch transformers safetensors
Run: python clip_tower_baseline.py OUT [--arch vit-l-14] [--threads 2] [--batch 4] [--batches 2]
"""
import argparse, json, os, time

import torch
import transformers
from safetensors.torch import save_file

ARCHS = {
    # OpenAI CLIP ViT-L/14 (CLIP score, the aesthetic predictor's backbone).
    "vit-l-14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                     num_attention_heads=16, patch_size=14, projection_dim=768),
    # ViT-H/14 (open_clip LAION; PickScore and HPS v2's backbone), with quick_gelu as the others.
    "vit-h-14": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                     num_attention_heads=16, patch_size=14, projection_dim=1024),
    # ViT-B/32 (a small, common CLIP).
    "vit-b-32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, patch_size=32, projection_dim=512),
    # A tiny tower for smoke tests.
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, patch_size=32, projection_dim=64),
}

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--arch", default="vit-l-14", choices=sorted(ARCHS))
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--batches", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
arch = dict(ARCHS[a.arch])
proj = arch.pop("projection_dim")
cfg = transformers.CLIPConfig(
    vision_config=dict(image_size=224, hidden_act="quick_gelu", **arch),
    text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=1,
                     num_attention_heads=4, hidden_act="quick_gelu"),
    projection_dim=proj,
)
model = transformers.CLIPModel(cfg).eval()
os.makedirs(a.out, exist_ok=True)
model.save_pretrained(os.path.join(a.out, "model"), safe_serialization=True)
g = torch.Generator().manual_seed(0)
x = torch.randn(a.batch, 3, 224, 224, generator=g)
save_file({"pixels": x.contiguous()}, os.path.join(a.out, "pixels.safetensors"))


def features(px):
    out = model.get_image_features(pixel_values=px)
    # transformers 5 returns a model output; 4.x a tensor.
    return out if torch.is_tensor(out) else out.pooler_output


with torch.no_grad():
    e = features(x)  # warm-up, and the reference embeddings
    save_file({"embeds": e.contiguous()}, os.path.join(a.out, "embeds.safetensors"))
    t = time.perf_counter()
    for _ in range(a.batches):
        features(x)
    dt = time.perf_counter() - t
print(json.dumps({"images_per_s": a.batch * a.batches / dt, "threads": a.threads,
                  "batch": a.batch, "arch": a.arch, "torch": torch.__version__,
                  "transformers": transformers.__version__}))
