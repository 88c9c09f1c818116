"""Writes open-clip-compressed-f16.pt: a few tensors of the clip-metrics fixture's open_clip
model saved the way HPSv2's `HPS_v2*_compressed.pt` files are (a dict with `state_dict`,
`module.`-prefixed names, float16), for the checkpoint reader's test.
Run: python make_open_clip_compressed.py ../../../../shared/fixtures/clip-metrics (torch, safetensors)."""
import sys
import torch
from safetensors.torch import load_file

oc = load_file(sys.argv[1] + '/open-clip/open_clip_model.safetensors')
small = {k: v for k, v in oc.items()
         if k.startswith('visual.ln_') or k in ('logit_scale', 'visual.proj', 'visual.class_embedding')}
torch.save({'epoch': 3, 'state_dict': {'module.' + k: v.half() for k, v in small.items()}},
           'open-clip-compressed-f16.pt')
