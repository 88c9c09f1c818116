"""Reference for the `tf-legacy` resize: torch-fidelity 0.4's
`interpolate_bilinear_2d_like_tensorflow1x(..., align_corners=False)` (its bit-exact "slow"
path) on two FID fixture images, NCHW float32 on [0, 255], 299×299. Every 7th value of the
flattened output is stored to keep the file small.

    pip install torch numpy pillow safetensors && pip install --no-deps torch-fidelity
    python make_tf1_resize.py ../../../../shared/fixtures/fid/images/a
"""
import sys, importlib.util, pathlib
import numpy as np, torch
from PIL import Image
from safetensors.torch import save_file

# Import the module file directly (the package __init__ needs torchvision).
spec = importlib.util.spec_from_file_location(
    "tf1", pathlib.Path(importlib.util.find_spec("torch_fidelity").submodule_search_locations[0])
    / "interpolate_compat_tensorflow.py")
tf1 = importlib.util.module_from_spec(spec); spec.loader.exec_module(tf1)

out = {}
for name in ["03.png", "04.png"]:
    x = np.asarray(Image.open(pathlib.Path(sys.argv[1]) / name).convert("RGB"))
    t = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).float()
    y = tf1.interpolate_bilinear_2d_like_tensorflow1x(t, size=(299, 299), align_corners=False)
    out[name] = y.flatten()[::7].contiguous()
save_file(out, "tf1_resize_reference.safetensors")
