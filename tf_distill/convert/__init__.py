"""Import and export of reference (PyTorch) StyleGAN2 checkpoints, without torch."""
