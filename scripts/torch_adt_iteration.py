"""PyTorch reference for `adt-bench bench device`: the work of one ADT iteration (K = 3, batch
1, 512 px, guidance 7.5) on SD 1.5's architecture with random weights, on the same GPU.

Mirrors adt-bench's iteration: a 10-step DDIM rollout with classifier-free guidance (no
gradient), VAE decode, a discriminator update on DINOv2-S features (random ViT-S/14 at 224 px,
frozen, with a linear head), then the generator update: the discriminator's gradient through the
decoder to the latent, three recomputed UNet evaluations with their vector-Jacobian products,
one diffusion-loss step, and AdamW on every UNet weight. Prints one JSON line: mean seconds of
iterations 2..N and the peak allocated GPU memory (torch.cuda.max_memory_allocated).

    python torch_adt_iteration.py [--iters 3] [--size 512]
"""
import argparse, json, math, time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import Dinov2Config, Dinov2Model

p = argparse.ArgumentParser()
p.add_argument("--iters", type=int, default=3)
p.add_argument("--size", type=int, default=512)
a = p.parse_args()
dev = "cuda"
torch.manual_seed(0)
unet = UNet2DConditionModel(
    block_out_channels=(320, 640, 1280, 1280), down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, layers_per_block=2, attention_head_dim=8,
    cross_attention_dim=768, sample_size=a.size // 8).to(dev)
vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4).to(dev)
vae.requires_grad_(False)
dino = Dinov2Model(Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                                image_size=224)).to(dev).requires_grad_(False)
head = torch.nn.Linear(384, 1).to(dev)
opt_g = torch.optim.AdamW(unet.parameters(), lr=1e-5)
opt_d = torch.optim.AdamW(head.parameters(), lr=1e-4)
betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
ac = torch.cumprod(1 - betas, 0).to(dev)
ts = list(range(999, -1, -100))[:10]
ctx = torch.randn(2, 77, 768, device=dev)
g = 7.5
lat = a.size // 8

def disc(img):
    x = torch.nn.functional.interpolate((img + 1) / 2, size=224, mode="bilinear")
    return head(dino(pixel_values=x).last_hidden_state[:, 0])

def eps(x, t):
    out = unet(torch.cat([x, x]), torch.tensor([t, t], device=dev), ctx).sample
    u, c = out.chunk(2)
    return u + g * (c - u)

times = []
for it in range(a.iters):
    torch.cuda.synchronize(); t0 = time.time()
    with torch.no_grad():
        x = torch.randn(1, 4, lat, lat, device=dev)
        states = [x]
        for i, t in enumerate(ts):
            e = eps(x, t)
            a_t = ac[t]; a_p = ac[ts[i + 1]] if i + 1 < len(ts) else ac.new_tensor(1.0)
            x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
            x = a_p.sqrt() * x0 + (1 - a_p).sqrt() * e
            states.append(x)
        fake = vae.decode(x / 0.18215).sample
    real = torch.rand_like(fake) * 2 - 1
    loss_d = torch.nn.functional.softplus(-disc(real)).mean() + torch.nn.functional.softplus(disc(fake)).mean()
    opt_d.zero_grad(); loss_d.backward(); opt_d.step()
    xl = x.clone().requires_grad_(True)
    loss_adv = torch.nn.functional.softplus(-disc(vae.decode(xl / 0.18215).sample)).mean()
    (gx,) = torch.autograd.grad(loss_adv, xl)
    opt_g.zero_grad()
    for i in (1, 4, 7):  # K = 3 trained evaluations, recomputed with gradient
        out = eps(states[i].detach(), ts[i])
        out.backward(gx * 0.1)
    x0 = torch.randn(1, 4, lat, lat, device=dev); n = torch.randn_like(x0); t = 500
    xt = ac[t].sqrt() * x0 + (1 - ac[t]).sqrt() * n
    l_diff = ((unet(xt, torch.tensor([t], device=dev), ctx[1:]).sample - n) ** 2).mean()
    l_diff.backward()
    opt_g.step()
    torch.cuda.synchronize(); times.append(time.time() - t0)
steady = times[1:] or times
print(json.dumps({"iteration_seconds": times, "steady_iteration_seconds": sum(steady) / len(steady),
                  "peak_gpu_memory_mib": torch.cuda.max_memory_allocated() / 2 ** 20,
                  "torch": torch.__version__, "size": a.size}))
