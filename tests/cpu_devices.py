"""Logical CPU devices, so MirroredStrategy runs with several replicas on one CPU in tests."""

import tensorflow as tf


def split_cpu(num_devices=2):
    """Splits the CPU into ``num_devices`` logical devices; call before TensorFlow starts its runtime."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    return [d.name for d in tf.config.list_logical_devices("CPU")]
