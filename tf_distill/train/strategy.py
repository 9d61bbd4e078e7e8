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


def split_cpu(num_devices=2):
    """Splits the CPU into logical devices (tests and demos of MirroredStrategy on one CPU); call before TF starts."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    return [d.name for d in tf.config.list_logical_devices("CPU")]
