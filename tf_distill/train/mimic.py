"""Stage 1 (spec C.2): train a heterogeneous student mapping to mimic the teacher's, w_S(z) ~ w_T(z)."""

import tensorflow as tf

from tf_distill.train.optim import TorchAdam


class MappingMimic:
    """Adam(lr 0.05, betas (0.9, 0.999)) on the student mapping only, L1 (or L2) to the teacher's w for fresh z."""

    def __init__(self, student, teacher, batch_size=4096, lr=0.05, loss="l1", seed=0):
        if loss not in ("l1", "l2"):
            raise ValueError(f"stage1.loss must be 'l1' or 'l2', got {loss!r}.")
        if student.style_dim != teacher.style_dim:
            raise ValueError(f"student style_dim {student.style_dim} != teacher's {teacher.style_dim}.")
        self.student, self.teacher = student.mapping, teacher.mapping
        self.batch_size, self.loss = int(batch_size), loss
        self.optimizer = TorchAdam(lr, 0.9, 0.999, name="mimic_optim")
        self.optimizer.build(self.student.trainable_variables)
        self.rng = tf.random.Generator.from_seed(seed)
        self.style_dim = student.style_dim

    def distance(self, z):
        diff = self.student(z) - self.teacher(z)
        return tf.reduce_mean(tf.abs(diff)) if self.loss == "l1" else tf.reduce_mean(tf.square(diff))

    @tf.function
    def step(self):
        z = self.rng.normal([self.batch_size, self.style_dim])
        with tf.GradientTape() as tape:
            loss = self.distance(z)
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss
