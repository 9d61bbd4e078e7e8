"""StyleGAN2 ops: upfirdn2d, fused bias + activation, and the inference form's 3x3 convs (``conv3x3``) and
ToRGB (``to_rgb``).

Each op runs either its plain-TF reference (the oracle every faster kernel is tested against)
or the compiled custom kernel. Which one: ``impl=`` on the op, layer or model, else the
innermost ``with implementation(name):``, else ``set_default_implementation`` (initially
``"auto"``: the compiled kernels when they are built, load and pass their self-check). See
``tf_distill.ops.choice``.
"""

from tf_distill.ops.choice import IMPLS, implementation, set_default_implementation
from tf_distill.ops.fused_bias_act import fused_bias_act
from tf_distill.ops.upfirdn2d import setup_kernel, upfirdn2d

__all__ = ["IMPLS", "fused_bias_act", "implementation", "set_default_implementation", "setup_kernel", "upfirdn2d"]
