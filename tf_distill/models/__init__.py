"""StyleGAN2 generator (teacher and channel-list students) and discriminator."""

from tf_distill.models.discriminator import Discriminator
from tf_distill.models.generator import Generator, SynthesisNetwork, standard_channels

__all__ = ["Discriminator", "Generator", "SynthesisNetwork", "standard_channels"]
