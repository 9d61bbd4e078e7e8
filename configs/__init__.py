"""Experiment configs (ml_collections); each file has get_config(arg) and its command in the docstring.

Installed as ``tf_distill.configs`` (pyproject), so ``--config=configs/NAME.py`` finds the installed
file from any working directory (tf_distill.cli) and configs import each other by that name.
"""
