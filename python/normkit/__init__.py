"""normkit: SIMD normalization kernels. normkit.torch is the PyTorch ATen CPU backend."""
