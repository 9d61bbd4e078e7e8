"""absl command-line binaries (installed as ``tf-distill-*`` console scripts)."""
