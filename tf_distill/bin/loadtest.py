"""tf-distill-loadtest: a bounded load test of a model server you run (loopback only by default).

    tf-distill-loadtest --server=localhost:8500 --model=student --requests=200 --concurrency=8 --batch=1

Prints throughput and latency percentiles (p50/p90/p99) of from_seeds requests; stops after
--requests requests or --max_seconds seconds, whichever first. Failed requests are counted per
error type; if every request failed (a server that refuses everything), the stats are printed
and one ``error:`` line follows, with exit status 1.
"""

import json

from absl import app, flags

from tf_distill import cli, limits

_SERVER = flags.DEFINE_string("server", "localhost:8500", "gRPC host:port, or http(s)://host:port for REST.")
_MODEL = flags.DEFINE_string("model", "student", "Model name.")
_VERSION = flags.DEFINE_integer("version", None, "Model version.", lower_bound=0, upper_bound=limits.MAX_VERSION)
_REQUESTS = flags.DEFINE_integer("requests", 100, "Requests to send (at most 100000).")
_CONCURRENCY = flags.DEFINE_integer("concurrency", 4, "Requests in flight (at most 256).")
_BATCH = flags.DEFINE_integer("batch", 1, "Seeds (images) per request.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 60.0, "Wall-time bound (at most 3600).")
_PSI = flags.DEFINE_float("truncation_psi", None, "Truncation psi.")
_ALLOW_REMOTE = flags.DEFINE_bool("allow_remote", False, "Allow a non-loopback server (one you run).")
_JSON = flags.DEFINE_bool("json", False, "Print JSON.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_distill.export import client as serving, loadtest  # pylint: disable=import-outside-toplevel

    if _PSI.value is not None and not 0.0 <= _PSI.value <= 1.0:
        raise app.UsageError(f"--truncation_psi must be in [0, 1], got {_PSI.value}")
    if not serving.is_rest(_SERVER.value):
        cli.import_tensorflow()  # the gRPC client builds TensorProtos (without the no-GPU notices)
    try:
        loadtest.check_target(_SERVER.value, _ALLOW_REMOTE.value)
        with serving.make_client(_SERVER.value, _MODEL.value, _VERSION.value, max_batch=_BATCH.value) as c:
            stats = loadtest.run(c, _BATCH.value, _REQUESTS.value, _CONCURRENCY.value, _MAX_SECONDS.value,
                                 _PSI.value)
    except (loadtest.LoadTestError, serving.RequestError) as err:  # a flag out of its bounds
        raise app.UsageError(str(err))
    print(json.dumps(stats, indent=2) if _JSON.value else loadtest.format_stats(stats), flush=True)
    loadtest.check_outcome(stats)


def run():
    cli.run(main, tensorflow=False)  # REST needs no TensorFlow; gRPC imports it in main


if __name__ == "__main__":
    run()
