"""visionpipe: a reproducible, DVC-orchestrated computer-vision training pipeline."""

__version__ = "0.1.0"
