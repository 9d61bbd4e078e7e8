"""Experiment configs (ml_collections); each file has get_config(arg) and its command in the docstring."""
