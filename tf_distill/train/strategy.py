"""tf.distribute strategy factory: ``default`` (one device), ``mirrored`` (all local devices), ``multi_worker``.

``multi_worker`` reads the cluster from ``TF_CONFIG`` (MultiWorkerMirroredStrategy, ring/auto
collectives); every worker runs the same binary with its own ``task.index``.
"""

import json
import os

import tensorflow as tf

from tf_distill.errors import UserError, first_few

STRATEGIES = ("default", "mirrored", "multi_worker")
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
                      '"index": 0}}')


def check_tf_config(text):
    """The cluster ``TF_CONFIG`` describes, checked here: TensorFlow reports a malformed one as a JSON,
    type or value error from deep inside, or (a list, ``[]``) silently trains alone."""
    fix = f"set TF_CONFIG on each worker like {_TF_CONFIG_EXAMPLE}, with that worker's index"
    try:
        config = json.loads(text)
    except ValueError as err:
        raise UserError(f"TF_CONFIG is not JSON ({err}) ({fix})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise UserError(f"TF_CONFIG has no \"cluster\" object naming the workers ({fix})")
    for job, tasks in cluster.items():
        addresses = list(tasks.values()) if isinstance(tasks, dict) else tasks
        if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) for a in addresses):
            raise UserError(f"TF_CONFIG cluster job {job!r} is {tasks!r}, not a list of \"host:port\" addresses "
                            f"({fix})")
    task = config.get("task")
    kind = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    if kind not in cluster:
        raise UserError(f"TF_CONFIG task {task!r} has no \"type\" among the cluster's jobs {sorted(cluster)} ({fix})")
    tasks = cluster[kind]
    valid = sorted(int(k) for k in tasks if str(k).isdigit()) if isinstance(tasks, dict) else range(len(tasks))
    if isinstance(index, bool) or not isinstance(index, int) or index not in valid:
        raise UserError(f"TF_CONFIG task index {index!r} is not one of job {kind!r}'s task indices "
                        f"{first_few(valid, 8)} ({fix})")
    return config


def make_strategy(name="default", devices=None):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError(f"strategy 'multi_worker' needs TF_CONFIG describing the cluster, e.g. "
                            f"{_TF_CONFIG_EXAMPLE}")
        check_tf_config(os.environ["TF_CONFIG"])
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")


def is_chief(strategy):
    """True on the worker that writes summaries, samples and the final outputs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0
                                                      and "chief" not in resolver.cluster_spec().as_dict())
