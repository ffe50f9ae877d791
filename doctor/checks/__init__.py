"""Checks: pure functions from the context to findings, one module per family.

A check never does I/O. It returns its findings (none means it passed) or ``Skip`` with
the reason it could not judge. Each family's module declares its checks with ``@check``
and their remedies with ``@remedy`` (doctor/checks/registry.py); ``CHECK_MODULES`` lists
them in report order.
"""

from __future__ import annotations

import importlib

from doctor.checks.registry import (
    REGISTRY,
    REMEDIES,
    CheckResult,
    CheckSpec,
    CheckStatus,
    Skip,
    attach_remedies,
    check,
    relate,
    remedy,
    run_checks,
)

__all__ = [
    "CHECK_MODULES",
    "REGISTRY",
    "REMEDIES",
    "CheckResult",
    "CheckSpec",
    "CheckStatus",
    "Skip",
    "attach_remedies",
    "check",
    "relate",
    "remedy",
    "run_checks",
]

# The family modules, in report order. Importing one registers its checks and remedies.
CHECK_MODULES = (
    "wheels",
    "dist_info",
    "companions",
    "cuda_majors",
    "lock",
    "lock_metadata",
    "drift",
    "uv_config",
    "driver",
    "libraries",
    "toolchain",
    "stack",
    "extensions",
    "runtime",
    "node",
    "cluster",
)

for _module in CHECK_MODULES:
    importlib.import_module(f"doctor.checks.{_module}")
