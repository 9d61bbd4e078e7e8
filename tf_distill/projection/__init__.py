"""Projection of images into W+ and noise (L-BFGS / Adam), latent editing and their PNG grids."""

from tf_distill.projection.edit import (PAPER_RANGES, interpolate, load_directions, mixing_ranges, mixing_table,
                                        move, parse_range, style_mix, teacher_directions)
from tf_distill.projection.grids import mixing_grid, projection_grid, save_png, side_by_side, strip_grid
from tf_distill.projection.lbfgs import FullBatchLBFGS, StepResult, polyinterp
from tf_distill.projection.project import (DEFAULT_STEPS, PAPER_STEPS, Projection, Projector, load_projection,
                                           load_target, project_images, projection_metrics, save_projection)
