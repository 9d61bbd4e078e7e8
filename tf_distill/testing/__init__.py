"""Helpers shared by the tests and benchmarks (independent PyTorch references); the product never imports this."""
