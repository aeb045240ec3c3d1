"""marble-eval: reproducible probing of music foundation models."""

__version__ = "0.1.0"
