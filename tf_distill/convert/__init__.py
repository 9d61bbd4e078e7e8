"""Reference (rosinality/CAGAN) StyleGAN2 state_dicts <-> our Keras models: the name mapping and the architecture
checks on what a checkpoint declares. Files are read and written by ``tf_distill.io``."""
