"""tf-distill-convert: rosinality/CAGAN ``.pt`` <-> our checkpoint directory, plus a sample grid.

    tf-distill-convert --input=teacher.pt --output=out/teacher        # .pt -> out/teacher/{g_ema,g,d}.keras
    tf-distill-convert --input=out/student --output=student.pt        # ours -> .pt (torch.load-able)

The sample grid (``--grid``, default ``<output>/samples.png`` or next to the .pt) shows
``--n_samples`` images of g_ema for z drawn with ``--seed``, with the stored noise maps.
An existing output is refused unless ``--overwrite`` is given, and an output that holds the input
is refused always: converting never deletes what it reads.
"""

import math
from pathlib import Path

from absl import app, flags

from tf_distill import cli, limits
from tf_distill.errors import UserError
from tf_distill.outputs import check_output

_INPUT = flags.DEFINE_string("input", None, "A rosinality .pt checkpoint, or our converted directory.")
_OUTPUT = flags.DEFINE_string("output", None, "Our checkpoint directory (from a .pt), or a .pt path (from a dir).")
_LR_MLP = flags.DEFINE_float("lr_mlp", 0.01, "Mapping lr multiplier of the source generator (not stored in .pt "
                             "files; 0.01 for every rosinality/CAGAN/StyleKD model).")
_GRID = flags.DEFINE_string("grid", None, "Where to write the sample grid PNG ('' for none).")
_N_SAMPLES = flags.DEFINE_integer("n_samples", 16, "Images in the sample grid.", lower_bound=1,
                                  upper_bound=limits.MAX_GRID_IMAGES)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the grid's z.", lower_bound=0, upper_bound=limits.MAX_SEED)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output (and grid); the input is never "
                               "touched.")


def write_sample_grid(generator, path, n_samples=16, seed=0, batch_size=8):
    """Images of ``generator`` for seeded z with the stored noise maps, as a PNG grid."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from tf_distill.images import save_grid  # pylint: disable=import-outside-toplevel

    z = np.random.default_rng(seed).standard_normal((n_samples, generator.style_dim)).astype(np.float32)
    images = np.concatenate([generator(z[i:i + batch_size], randomize_noise=False).numpy()
                             for i in range(0, n_samples, batch_size)])
    return save_grid(images, path)


def check_paths(input_path, output_path, grid=None, overwrite=False):
    """Refuses, before anything is read, a conversion that would lose data; returns the grid path (or None)."""
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise UserError(f"--input={input_path} does not exist (give a .pt file or a converted checkpoint folder)")
    if input_path.is_dir():
        if output_path.suffix != ".pt":
            raise UserError(f"converting folder {input_path} writes a .pt file (give --output=<file>.pt)")
        check_output(output_path, overwrite=overwrite, inputs=[input_path], kind="file")
        default_grid = output_path.with_suffix(".png")
    else:
        from tf_distill.io.checkpoints import CHECKPOINT_ENTRIES  # pylint: disable=import-outside-toplevel

        default_grid = output_path / "samples.png"
        check_output(output_path, overwrite=overwrite, inputs=[input_path], kind="folder",
                     replaces=(*CHECKPOINT_ENTRIES, default_grid.name))
    if grid == "":
        return None
    grid = Path(grid or default_grid)
    if grid != default_grid or input_path.is_dir():  # the default inside a fresh output folder is new anyway
        check_output(grid, overwrite=overwrite, inputs=[input_path], flag="--grid", kind="file")
    return grid


def convert(input_path, output_path, lr_mlp=0.01, grid=None, n_samples=16, seed=0, overwrite=False):
    from tf_distill.io import checkpoints  # pylint: disable=import-outside-toplevel

    grid = check_paths(input_path, output_path, grid, overwrite)
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.is_dir():
        models = checkpoints.load_models(input_path)
        checkpoints.write_rosinality(output_path, **models)
    else:
        models = checkpoints.read_rosinality(input_path, lr_mlp=lr_mlp)
        checkpoints.save_models(output_path, **models)
    print(f"wrote {output_path} ({', '.join(sorted(models))})")
    if grid is not None:
        generator = models.get("g_ema", models.get("g"))
        if generator is not None:
            path = write_sample_grid(generator, grid, n_samples=n_samples, seed=seed)
            print(f"wrote {path}")
    return models


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _INPUT.value or not _OUTPUT.value:
        raise app.UsageError("Both --input and --output are required.")
    if not (math.isfinite(_LR_MLP.value) and _LR_MLP.value > 0):  # else the checkpoint's check would blame the file
        raise app.UsageError(f"--lr_mlp must be a finite number > 0, got {_LR_MLP.value} (0.01 for every "
                             "rosinality/CAGAN/StyleKD model)")
    convert(_INPUT.value, _OUTPUT.value, _LR_MLP.value, _GRID.value, _N_SAMPLES.value, _SEED.value, _OVERWRITE.value)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
