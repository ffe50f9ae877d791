"""torch-doctor: a post-install environment doctor for PyTorch on NVIDIA GPUs."""

from __future__ import annotations

__all__ = ["REPORT_SCHEMA", "__version__"]

__version__ = "0.1.0"
# The `schema` of every JSON report: docs/report.schema.json's $id. Here, where both the
# JSON renderer and `compare` (which reads reports without importing the checks) find it.
REPORT_SCHEMA = "https://torch-doctor.dev/schemas/report-1.json"
