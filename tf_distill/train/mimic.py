"""Stage 1 (spec C.2): train a heterogeneous student mapping to mimic the teacher's, w_S(z) ~ w_T(z).

It runs under the run's tf.distribute strategy, as stage 2 does (tf_distill.train.step): the z
batch is drawn on the host for the *global* batch from one checkpointed ``tf.random.Generator``,
each replica takes its rows, and the gradients are summed across replicas. So a step gives the
same mapping on one device or on several replicas, and a resumed run continues exactly.
"""

import tensorflow as tf

from tf_distill.train.optim import TorchAdam


class MappingMimic:
    """Adam(lr 0.05, betas (0.9, 0.999)) on the student mapping only, L1 (or L2) to the teacher's w for fresh z.

    ``student`` and ``teacher`` must have been built under ``strategy``'s scope (default: the current strategy).
    """

    def __init__(self, student, teacher, batch_size=4096, lr=0.05, loss="l1", seed=0, strategy=None):
        strategy = strategy or tf.distribute.get_strategy()
        if loss not in ("l1", "l2"):
            raise ValueError(f"stage1.loss must be 'l1' or 'l2', got {loss!r}.")
        if student.style_dim != teacher.style_dim:
            raise ValueError(f"student style_dim {student.style_dim} != teacher's {teacher.style_dim}.")
        if int(batch_size) % strategy.num_replicas_in_sync:
            raise ValueError(f"stage1.batch_size {batch_size} is not divisible by the "
                             f"{strategy.num_replicas_in_sync} replicas.")
        self.strategy = strategy
        self.student, self.teacher = student.mapping, teacher.mapping
        self.batch_size, self.loss = int(batch_size), loss
        with strategy.scope():
            self.optimizer = TorchAdam(lr, 0.9, 0.999, name="mimic_optim")
            self.optimizer.build(self.student.trainable_variables)
        self.rng = tf.random.Generator.from_seed(seed)
        self.style_dim = student.style_dim
        self._step = None

    def distance(self, z):
        diff = self.student(z) - self.teacher(z)
        return tf.reduce_mean(tf.abs(diff)) if self.loss == "l1" else tf.reduce_mean(tf.square(diff))

    def _replica_step(self, z):
        ctx = tf.distribute.get_replica_context()
        n, rid = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
        rows = self.batch_size // n
        z = z[rid * rows:(rid + 1) * rows] if n > 1 else z
        with tf.GradientTape() as tape:
            loss = self.distance(z)
            scaled = loss / n  # summed across replicas: the gradient of the global mean
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, loss)

    def step(self):
        """One mimicking step on a fresh global batch of z; returns the mean loss."""
        if self._step is None:
            @tf.function
            def step_fn():
                z = self.rng.normal([self.batch_size, self.style_dim])
                loss = self.strategy.run(self._replica_step, args=(z,))
                return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)

            self._step = step_fn
        return self._step()
