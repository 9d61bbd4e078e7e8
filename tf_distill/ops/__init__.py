"""StyleGAN2 ops: upfirdn2d and fused bias + activation.

Each public op takes ``impl="auto"|"ref"|"custom"``. ``ref`` is plain TensorFlow and the
oracle every faster kernel is tested against; ``auto`` uses the compiled custom ops when
they are built and loadable and the reference path otherwise.
"""

from tf_distill.ops.fused_bias_act import fused_bias_act
from tf_distill.ops.upfirdn2d import setup_kernel, upfirdn2d

__all__ = ["fused_bias_act", "upfirdn2d", "setup_kernel"]
