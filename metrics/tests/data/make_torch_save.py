"""Writes torch_save_small.pth with real torch.save (the pytorch-fid .pth packaging) for the
loader test: a state dict with contiguous tensors, a tensor that is a view at a storage offset,
and an int64 buffer (num_batches_tracked) that the loader must ignore.

    python make_torch_save.py   # needs torch; the output is committed
"""
import collections
import torch

base = torch.arange(12, dtype=torch.float32) * 0.5
sd = collections.OrderedDict()
sd["Conv2d_1a_3x3.conv.weight"] = torch.linspace(-1, 1, 2 * 3 * 3 * 3).reshape(2, 3, 3, 3)
sd["Conv2d_1a_3x3.bn.running_mean"] = base[4:6]  # shares a storage, offset 4
sd["Conv2d_1a_3x3.bn.running_var"] = torch.tensor([1.5, 2.5])
sd["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
torch.save(sd, "torch_save_small.pth")
