"""Losses and regularizers of StyleGAN2 training and StyleKD distillation."""
