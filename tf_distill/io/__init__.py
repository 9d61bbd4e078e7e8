"""Files in and out: torch checkpoints and TorchScript archives (read without torch and without
running them), torch checkpoints written back, and our own generator/discriminator checkpoints.

Modules: ``torch_reader`` (``torch.save`` files, numpy pickles), ``torchscript``, ``torch_writer``,
``checkpoints`` (rosinality ``.pt``, ``.keras``, our checkpoint folder). Nothing is imported here,
so reading a torch file does not load Keras. Imports are absolute (``tf_distill.io``), so the
standard library's ``io`` is never shadowed.
"""
