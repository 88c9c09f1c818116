"""Statistics files written by numpy the way pytorch-fid (`np.savez_compressed(mu=, sigma=)`)
and clean-fid (`np.savez`) write them, small (d = 3), plus a Fortran-order float32 variant.

    python make_numpy_stats.py
"""
import numpy as np

rng = np.random.default_rng(0)
x = rng.random((10, 3))
mu, sigma = np.mean(x, axis=0), np.cov(x, rowvar=False)
np.savez_compressed("pytorch_fid_style.npz", mu=mu, sigma=sigma)
np.savez("clean_fid_style.npz", mu=mu, sigma=sigma)
np.savez("fortran_f32.npz", mu=mu.astype(np.float32), sigma=np.asfortranarray(sigma.astype(np.float32)))
np.save("expected_x.npy", x)
