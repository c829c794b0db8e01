"""Benchmarks: descent against a named peer (PyTorch on the same device class), measured in one run."""
