"""Reproduction of the paper's experiments: named suites of distillation runs, their evaluation and report."""
