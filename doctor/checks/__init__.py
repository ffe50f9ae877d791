"""Checks: pure functions from facts to findings.

A check never does I/O. It either returns its findings (none means it passed) or
``Skip`` with the reason it could not judge (a missing torch is one finding, not six).
Checks register themselves with ``@check`` and are listed in ``CHECK_MODULES``.
"""

from __future__ import annotations

from doctor.checks.registry import (
    REGISTRY,
    CheckResult,
    CheckSpec,
    CheckStatus,
    Skip,
    check,
    run_checks,
)

__all__ = [
    "REGISTRY",
    "CheckResult",
    "CheckSpec",
    "CheckStatus",
    "Skip",
    "check",
    "run_checks",
]

# Importing a module registers its checks, in report order.
from doctor.checks import wheels as _wheels  # noqa: F401
from doctor.checks import companions as _companions  # noqa: F401
from doctor.checks import cuda_majors as _cuda_majors  # noqa: F401
from doctor.checks import lock as _lock  # noqa: F401
from doctor.checks import sources as _sources  # noqa: F401
from doctor.checks import driver as _driver  # noqa: F401
from doctor.checks import libraries as _libraries  # noqa: F401
from doctor.checks import toolchain as _toolchain  # noqa: F401
from doctor.checks import extensions as _extensions  # noqa: F401
