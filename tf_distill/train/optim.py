"""Adam in PyTorch's form, the lazy-regularization corrections and the generator EMA (spec C.4, C.5).

Keras' Adam folds the bias correction into the step size (the "epsilon hat" form) and defaults
to eps 1e-7; the reference uses ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with eps 1e-8. The
difference is small but it is not the reference, so this is that formula.
"""

import keras
import tensorflow as tf

EMA_DECAY = 0.5 ** (32 / (10 * 1000))  # 0.99778..., per iteration (rosinality: accum = 0.5 ** (32 / 10k))


def lazy_regularization(lr, betas, reg_every):
    """(lr, betas) corrected for a regularizer applied every ``reg_every`` steps: ``x * r``, ``beta ** r``.

    ``r = reg_every / (reg_every + 1)``; G (every 4): lr 0.0016, beta2 0.99^0.8; D (every 16): 0.00188.
    """
    ratio = reg_every / (reg_every + 1) if reg_every else 1.0
    return lr * ratio, tuple(b ** ratio for b in betas)


@keras.saving.register_keras_serializable(package="tf_distill")
class TorchAdam(keras.optimizers.Optimizer):
    """Adam exactly as ``torch.optim.Adam`` (no weight decay, no amsgrad)."""

    def __init__(self, learning_rate=0.002, beta_1=0.0, beta_2=0.99, epsilon=1e-8, name="torch_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m = [self.add_variable_from_reference(v, "m") for v in var_list]
        self._v = [self.add_variable_from_reference(v, "v") for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        step = tf.cast(self.iterations + 1, variable.dtype)
        b1, b2 = tf.cast(self.beta_1, variable.dtype), tf.cast(self.beta_2, variable.dtype)
        i = self._get_variable_index(variable)
        m, v = self._m[i], self._v[i]
        self.assign(m, b1 * m + (1 - b1) * gradient)
        self.assign(v, b2 * v + (1 - b2) * tf.square(gradient))
        m_hat = m / (1 - tf.pow(b1, step))
        v_hat = v / (1 - tf.pow(b2, step))
        self.assign_sub(variable, lr * m_hat / (tf.sqrt(v_hat) + self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


def ema_update(ema_model, model, decay=EMA_DECAY):
    """``p_ema <- decay * p_ema + (1 - decay) * p`` over trainable parameters only (not noise buffers)."""
    for p_ema, p in zip(ema_model.trainable_weights, model.trainable_weights):
        p_ema.assign(decay * p_ema + (1.0 - decay) * p)
