"""tf-distill-client: ask a TF Serving model exported by tf-distill-export for images from seeds; write PNGs.

    tf-distill-client --server=localhost:8500 --model=student --seeds=0-7 --out=out/served
    tf-distill-client --server=http://localhost:8501 --model=student --seeds=1,5,9 --truncation_psi=0.7

``--server`` host:port uses gRPC (PredictionService/Predict), an http(s):// URL the REST API.
Seeds go in requests of at most ``--batch`` (<= 1024) and each answer is written before the next
request, so memory stays bounded; ``--seeds`` may name at most 100000 seeds. Connection
failures, timeouts, rejected requests and unreadable or oversized answers end in one
``error:`` line and exit status 1 (bad flags: 2).
"""

import math

from absl import app, flags

from tf_distill import cli, limits

MAX_TIMEOUT_S = 86400  # beyond it the socket timeout overflows (1e308 s) and nobody waits that long

_SERVER = flags.DEFINE_string("server", "localhost:8500", "gRPC host:port, or http(s)://host:port for REST.")
_MODEL = flags.DEFINE_string("model", "student", "Model name in the server's models.config.")
_VERSION = flags.DEFINE_integer("version", None, "Model version (default: the server's choice, the newest).",
                                lower_bound=0, upper_bound=limits.MAX_VERSION)
_SEEDS = flags.DEFINE_string("seeds", "0-3", "Seeds: comma-separated integers and ranges, e.g. 0-7,42 "
                             "(at most 100000 in all).")
_PSI = flags.DEFINE_float("truncation_psi", None, "Truncation psi in [0, 1] (default: the model's, 1).")
_OUT = flags.DEFINE_string("out", "served", "Directory for the PNGs (seed<N>.png).")
_TIMEOUT = flags.DEFINE_float("timeout", 30.0, "Seconds to wait for each answer.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace seed<N>.png files that exist in --out.")
_BATCH = flags.DEFINE_integer("batch", 16, "Seeds per request (1 to 1024; at most the export's --max_batch).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_distill.export import client as serving  # pylint: disable=import-outside-toplevel

    try:
        seeds = serving.parse_seeds(_SEEDS.value)
    except serving.RequestError as err:
        raise app.UsageError(f"--seeds: {err}")
    try:
        batch = serving.check_max_batch(_BATCH.value)
    except serving.RequestError as err:
        raise app.UsageError(str(err))
    if _PSI.value is not None and not 0.0 <= _PSI.value <= 1.0:
        raise app.UsageError(f"--truncation_psi must be in [0, 1], got {_PSI.value}")
    if not (math.isfinite(_TIMEOUT.value) and 0 < _TIMEOUT.value <= MAX_TIMEOUT_S):
        raise app.UsageError(f"--timeout must be a positive number of seconds up to {MAX_TIMEOUT_S} (a day), "
                             f"got {_TIMEOUT.value}")
    check_output_folder(_OUT.value, seeds, _OVERWRITE.value)
    if not serving.is_rest(_SERVER.value):
        cli.import_tensorflow()  # the gRPC client builds TensorProtos (without the no-GPU notices)
    shape = None
    with serving.make_client(_SERVER.value, _MODEL.value, _VERSION.value, _TIMEOUT.value, batch) as c:
        for i in range(0, len(seeds), batch):
            part = seeds[i:i + batch]
            images = c.images_from_seeds(part, _PSI.value)
            serving.write_pngs(images, _OUT.value, names=[f"seed{s}" for s in part])
            shape = images.shape
    print(f"Wrote {len(seeds)} images {shape[1]}x{shape[2]} to {_OUT.value}")


def check_output_folder(out, seeds, overwrite):
    """Refuses an --out we cannot write, or one holding seed PNGs this run would replace (without --overwrite)."""
    from tf_distill.outputs import check_output  # pylint: disable=import-outside-toplevel

    out = check_output(out, overwrite=True, flag="--out")
    if out.is_dir() and not overwrite:
        clash = [s for s in seeds if (out / f"seed{s}.png").exists()]
        if clash:
            raise app.UsageError(f"--out {out} already holds seed{clash[0]}.png and {len(clash) - 1} more of these "
                                 "seeds (pass --overwrite to replace them, or choose another folder)")


def run():
    cli.run(main, tensorflow=False)  # REST needs no TensorFlow; gRPC imports it in main


if __name__ == "__main__":
    run()
