"""Bounds of the values users give as integers: the binaries' flags (absl's lower_bound / upper_bound)
and the training config (config_check), in one place that imports nothing, so both can read it.

Seeds and counts stay within int32, where TensorFlow and NumPy take them; batches and grids within what
fits in memory at 1024 px; model versions within int64, what TF Serving's request proto holds.
"""

MAX_SEED = 2**31 - 1
MAX_COUNT = 2**31 - 1
MAX_BATCH = 1024
MAX_GRID_IMAGES = 1024
MAX_VERSION = 2**63 - 1
MAX_SEEDS_PER_ROW = 100  # tf-distill-reproduce: each seed of a row is a full distillation run
