"""A check passes only on evidence: with nothing to judge it is skipped, with the reason."""

from __future__ import annotations

import dataclasses

from doctor.checks import CheckStatus
from doctor.facts.machine import NvmlStatus
from doctor.pipeline import judge
from tests.handmade import healthy_facts
from tests.test_driver_checks import machine, with_machine
from tests.test_toolchain import with_toolchain


def _status(report_results: object, check_id: str) -> tuple[CheckStatus, str | None]:
    result = next(r for r in report_results if r.spec.id == check_id)  # type: ignore[attr-defined]
    return result.status, result.reason


def test_no_driver_at_all_is_not_a_pass_of_the_driver_library_check() -> None:
    report = judge(with_machine(machine(status=NvmlStatus.LIBRARY_NOT_FOUND)))
    assert _status(report.results, "nvml-driver-mismatch") == (
        CheckStatus.SKIPPED,
        "see no-nvidia-driver",
    )


def test_a_working_driver_is_a_pass_of_the_driver_library_check() -> None:
    report = judge(with_machine(machine()))
    assert _status(report.results, "nvml-driver-mismatch")[0] is CheckStatus.PASSED


def test_the_toolchain_check_without_a_gpu_says_ptxas_was_not_asked() -> None:
    no_gpu = with_toolchain(gpus=())
    status, reason = _status(judge(no_gpu).results, "torch-compile-toolchain")
    assert status is CheckStatus.SKIPPED
    assert reason is not None and "ptxas was not asked" in reason


def test_versions_nobody_reported_are_not_a_pass_of_the_version_check() -> None:
    from tests.test_libraries_checks import _cudnn_row, _facts

    row = _cudnn_row()
    unversioned = dataclasses.replace(row, load=dataclasses.replace(row.load, version=None))
    status, reason = _status(judge(_facts((unversioned,))).results, "library-version-mismatch")
    assert (status, reason) == (CheckStatus.SKIPPED, "no loaded CUDA library reported its version")
    assert _status(judge(_facts((row,))).results, "library-version-mismatch")[0] is (
        CheckStatus.PASSED
    )


def test_pass_lines_read_as_what_was_checked() -> None:
    from doctor.checks import REGISTRY

    for spec in REGISTRY.values():
        # A label says what holds when the check passes, never the failure's name.
        assert spec.label and spec.label != spec.id and not spec.label.startswith("no-"), spec.id
    assert healthy_facts() is not None
