"""tf.distribute strategy factory: ``default`` (one device), ``mirrored`` (all local devices), ``multi_worker``.

``multi_worker`` reads the cluster from ``TF_CONFIG`` (MultiWorkerMirroredStrategy, ring/auto
collectives); every worker runs the same binary with its own ``task.index``.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name="default", devices=None):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi_worker' needs TF_CONFIG describing the cluster, e.g. "
                             '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
                             '"index": 0}}.')
        json.loads(os.environ["TF_CONFIG"])  # a malformed TF_CONFIG is reported here, not deep inside TF
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")


def is_chief(strategy):
    """True on the worker that writes summaries, samples and the final outputs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0
                                                      and "chief" not in resolver.cluster_spec().as_dict())
