"""tf-distill-client: ask a TF Serving model exported by tf-distill-export for images from seeds; write PNGs.

    tf-distill-client --server=localhost:8500 --model=student --seeds=0-7 --out=out/served
    tf-distill-client --server=http://localhost:8501 --model=student --seeds=1,5,9 --truncation_psi=0.7

``--server`` host:port uses gRPC (PredictionService/Predict), an http(s):// URL the REST API.
Exit status 2 on connection failures, timeouts, rejected requests and unreadable answers.
"""

import sys

from absl import app, flags

_SERVER = flags.DEFINE_string("server", "localhost:8500", "gRPC host:port, or http(s)://host:port for REST.")
_MODEL = flags.DEFINE_string("model", "student", "Model name in the server's models.config.")
_VERSION = flags.DEFINE_integer("version", None, "Model version (default: the server's choice, the newest).")
_SEEDS = flags.DEFINE_string("seeds", "0-3", "Seeds: comma-separated integers and ranges, e.g. 0-7,42.")
_PSI = flags.DEFINE_float("truncation_psi", None, "Truncation psi in [0, 1] (default: the model's, 1).")
_OUT = flags.DEFINE_string("out", "served", "Directory for the PNGs (seed<N>.png).")
_TIMEOUT = flags.DEFINE_float("timeout", 30.0, "Seconds to wait for the answer.")
_BATCH = flags.DEFINE_integer("batch", 16, "Seeds per request.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_distill.export import client as serving  # pylint: disable=import-outside-toplevel

    try:
        seeds = serving.parse_seeds(_SEEDS.value)
    except ValueError as err:
        raise app.UsageError(f"--seeds: {err}")
    if _BATCH.value < 1:
        raise app.UsageError("--batch must be >= 1.")
    import numpy as np  # pylint: disable=import-outside-toplevel

    try:
        with serving.make_client(_SERVER.value, _MODEL.value, _VERSION.value, _TIMEOUT.value) as c:
            images = [c.images_from_seeds(seeds[i:i + _BATCH.value], _PSI.value)
                      for i in range(0, len(seeds), _BATCH.value)]
    except (serving.ServingError, ValueError) as err:
        print(f"tf-distill-client: {err}", file=sys.stderr)
        sys.exit(2)
    images = np.concatenate(images, 0)
    paths = serving.write_pngs(images, _OUT.value, names=[f"seed{s}" for s in seeds])
    print(f"Wrote {len(paths)} images {images.shape[1]}x{images.shape[2]} to {_OUT.value}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
