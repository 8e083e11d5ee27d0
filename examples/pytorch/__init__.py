"""A real PyTorch model as a kubetune Trainable (see docs/gpu.md)."""
