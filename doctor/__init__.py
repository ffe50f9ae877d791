"""torch-doctor: a post-install environment doctor for PyTorch on NVIDIA GPUs."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
