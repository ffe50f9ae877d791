"""The driver checks and the compatibility rules, on hand-built facts (no driver, no venv)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from doctor.checks import Skip
from doctor.checks.registry import outcome_of
from doctor.derive import derive
from doctor.derive.cuda_compat import best_variant, covering_target, parse_target
from doctor.facts import Facts
from doctor.facts.machine import (
    ArchListFacts,
    CudaDriverFacts,
    GpuFacts,
    MachineFacts,
    NvmlFacts,
    NvmlStatus,
    PciDeviceFacts,
)
from doctor.findings import Finding, Severity
from doctor.pipeline import judge
from doctor.probe.machine import parse_visible_devices
from tests.handmade import healthy_facts, project, torch_build

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CU130_ARCHS = ArchListFacts(
    source="fatbin",
    sm=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"),
    libraries=("/venv/lib/python3.11/site-packages/torch/lib/libtorch_cuda.so",),
    fat_binaries=475,
)
H100 = GpuFacts(0, "NVIDIA H100 80GB HBM3", (9, 0), 85520809984, False, False, "GPU-1")
RTX_5090 = GpuFacts(0, "NVIDIA GeForce RTX 5090", (12, 0), 34190917632, None, None, "GPU-2")


def machine(
    gpus: Sequence[GpuFacts] = (H100,),
    *,
    driver: str = "580.95.05",
    cuda: int = 13000,
    status: str = NvmlStatus.OK,
    init_result: int = 0,
    archs: ArchListFacts | None = CU130_ARCHS,
    **extra: Any,
) -> MachineFacts:
    ok = status == NvmlStatus.OK
    return MachineFacts(
        nvml=NvmlFacts(
            status=status,
            driver_version=driver if ok else None,
            cuda_driver_version=cuda if ok else None,
            gpus=tuple(gpus) if ok else (),
            error_code=None if ok else {"library-not-found": 12, "rm-version-mismatch": 18}[status],
            error_text=None if ok else "NVML Shared Library Not Found",
        ),
        cuda_driver=CudaDriverFacts(
            loaded=ok, init_result=init_result if ok else None, driver_version=cuda if ok else None
        ),
        torch_archs=archs,
        **extra,
    )


def with_machine(m: MachineFacts, facts: Facts | None = None, **build: Any) -> Facts:
    base = facts if facts is not None else healthy_facts()
    if build:
        base = dataclasses.replace(base, torch=torch_build(**build))
    return dataclasses.replace(base, machine=m)


def run(check_id: str, facts: Facts) -> Sequence[Finding] | Skip:
    return outcome_of(check_id, derive(facts))


def only(check_id: str, facts: Facts) -> Finding:
    outcome = run(check_id, facts)
    assert not isinstance(outcome, Skip), outcome
    assert len(outcome) == 1, outcome
    return outcome[0]


DRIVER_IDS = (
    "no-nvidia-driver",
    "nvml-driver-mismatch",
    "cuda-init-failed",
    "driver-too-old",
    "gpu-arch-unsupported",
    "no-gpu-visible",
    "visible-devices-truncated",
    "mig-enabled",
)


# --- rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capability", "targets", "expected"),
    [
        ((8, 9), ["sm_80", "sm_86", "sm_90"], "sm_86"),  # Ada runs the sm_86 cubins
        ((12, 1), ["sm_100", "sm_120"], "sm_120"),  # GB10 runs sm_120 cubins
        ((10, 3), ["sm_100", "sm_120"], "sm_100"),  # B300 runs sm_100 cubins
        ((9, 0), ["sm_80", "sm_86"], None),  # no cubin crosses a major version
        ((13, 0), ["sm_120", "compute_120"], "compute_120"),  # PTX JIT for a newer GPU
        ((10, 0), ["sm_90", "compute_120"], None),  # PTX never runs on an older GPU
        ((9, 0), ["sm_90a"], "sm_90a"),
        ((10, 0), ["sm_90a", "sm_80"], None),  # arch-specific code is not forward compatible
    ],
)
def test_cubin_and_ptx_rules(
    capability: tuple[int, int], targets: list[str], expected: str | None
) -> None:
    parsed = [t for t in (parse_target(n) for n in targets) if t is not None]
    found = covering_target(capability, parsed)
    assert (found.name if found else None) == expected


@pytest.mark.parametrize(
    ("driver", "cuda", "capabilities", "torch", "variant", "same_release"),
    [
        ("570.124.06", 12080, [(12, 0)], "2.14.1+cpu", "cu128", False),
        ("580.95.05", 13000, [(9, 0)], "2.14.1+cpu", "cu130", True),
        ("535.104.05", 12020, [(9, 0)], "2.14.1+cu130", "cu126", True),
        ("580.95.05", 13000, [(5, 2)], "2.14.1+cu130", "cu126", True),
        ("570.124.06", 12080, [(9, 0)], "2.9.1+cpu", "cu128", True),
    ],
)
def test_best_variant_follows_driver_gpu_and_release(
    driver: str,
    cuda: int,
    capabilities: list[tuple[int, int]],
    torch: str,
    variant: str,
    same_release: bool,
) -> None:
    choice = best_variant(
        driver_cuda=cuda, capabilities=capabilities, torch_version=torch, driver_version=driver
    )
    assert choice is not None
    assert (choice.build.variant, choice.same_release) == (variant, same_release)


def test_no_variant_carries_kepler_code() -> None:
    assert best_variant(driver_cuda=13000, capabilities=[(3, 7)], torch_version="2.14.1") is None


def test_a_12x_driver_below_the_mvc_floor_gets_no_12x_variant_it_cannot_run() -> None:
    # 525.53 reports CUDA 12.0 but is below the 12.x floor 525.60.13: only 11.8 or 12.0 fit.
    choice = best_variant(
        driver_cuda=12000, capabilities=[(9, 0)], torch_version="2.6.0", driver_version="525.53"
    )
    assert choice is not None and choice.build.variant == "cu118"


# --- no machine facts: every driver check skips ------------------------------------------


def test_without_machine_facts_the_driver_checks_skip_and_the_report_stays_ok() -> None:
    facts = healthy_facts()
    for check_id in DRIVER_IDS:
        assert isinstance(run(check_id, facts), Skip), check_id
    assert judge(facts).verdict.value == "ok"


def test_healthy_h100_on_580_raises_nothing() -> None:
    facts = with_machine(machine())
    for check_id in DRIVER_IDS:
        outcome = run(check_id, facts)
        assert isinstance(outcome, Skip) or outcome == [], (check_id, outcome)


# --- no-nvidia-driver ---------------------------------------------------------------------


def test_no_driver_is_a_warning_for_a_cuda_build_and_info_for_a_cpu_build() -> None:
    absent = machine(status=NvmlStatus.LIBRARY_NOT_FOUND)
    assert only("no-nvidia-driver", with_machine(absent)).severity is Severity.WARNING
    cpu = with_machine(absent, version="2.14.1+cpu", cuda=None)
    assert only("no-nvidia-driver", cpu).severity is Severity.INFO


def test_no_driver_names_an_nvidia_gpu_on_the_pci_bus() -> None:
    gpu_on_bus = PciDeviceFacts("0000:01:00.0", "0x2684", "0x030000", "nouveau")
    absent = machine(status=NvmlStatus.LIBRARY_NOT_FOUND, pci_devices=(gpu_on_bus,))
    finding = only("no-nvidia-driver", with_machine(absent))
    assert any("0000:01:00.0" in e and "nouveau" in e for e in finding.evidence)


def test_no_driver_skips_the_checks_that_need_one() -> None:
    facts = with_machine(machine(status=NvmlStatus.LIBRARY_NOT_FOUND))
    for check_id in ("cuda-init-failed", "driver-too-old", "gpu-arch-unsupported", "mig-enabled"):
        assert isinstance(run(check_id, facts), Skip), check_id


@pytest.mark.parametrize(
    ("container", "command"),
    [
        ("docker", "docker run --gpus all IMAGE\n"),
        # Podman reaches the GPUs through the toolkit's CDI spec, not --gpus.
        ("podman", "podman run --device nvidia.com/gpu=all IMAGE\n"),
        ("kubernetes", None),  # a pod spec, not a command
    ],
)
def test_no_driver_in_a_container_is_started_again_with_the_gpus_for_its_engine(
    container: str, command: str | None
) -> None:
    absent = machine(status=NvmlStatus.LIBRARY_NOT_FOUND, container=container)
    finding = next(f for f in judge(with_machine(absent)).findings if f.id == "no-nvidia-driver")
    shell = [r.text for r in finding.remedies if r.kind.value == "shell"]
    assert shell == ([command] if command else [])
    prose = " ".join(r.text for r in finding.remedies if r.kind.value == "text")
    assert "do not install a driver inside the image" in prose
    assert not prose.rstrip().endswith(":")  # no sentence left waiting for a command
    if container == "kubernetes":
        assert "nvidia.com/gpu" in prose


def test_nvidia_visible_devices_hiding_the_gpus_in_podman_gets_the_podman_command() -> None:
    gpu_on_bus = PciDeviceFacts("0000:01:00.0", "0x2330", "0x030200", "nvidia")
    hidden = machine(
        status=NvmlStatus.LIBRARY_NOT_FOUND,
        container="podman",
        pci_devices=(gpu_on_bus,),
        nvidia_visible_devices=parse_visible_devices("NVIDIA_VISIBLE_DEVICES", "void"),
    )
    finding = next(f for f in judge(with_machine(hidden)).findings if f.id == "no-gpu-visible")
    assert finding.data.container == "podman"
    shell = [r.text for r in finding.remedies if r.kind.value == "shell"]
    assert shell == ["podman run --device nvidia.com/gpu=all IMAGE\n"]


# --- nvml-driver-mismatch / cuda-init-failed ----------------------------------------------


def test_rm_mismatch_is_an_error_naming_the_kernel_module() -> None:
    broken = machine(status=NvmlStatus.RM_VERSION_MISMATCH, kernel_module_version="570.124.06")
    finding = only("nvml-driver-mismatch", with_machine(broken))
    assert finding.severity is Severity.ERROR
    assert any("570.124.06" in e for e in finding.evidence)


def test_cuinit_error_is_named_and_a_successful_cuinit_is_quiet() -> None:
    failing = machine(init_result=803)
    failing = dataclasses.replace(
        failing,
        cuda_driver=dataclasses.replace(
            failing.cuda_driver,  # type: ignore[arg-type]
            error_name="CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
            error_text="system has unsupported display driver / cuda driver combination",
        ),
    )
    finding = only("cuda-init-failed", with_machine(failing))
    assert "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH" in finding.title
    assert "Error 803" in finding.detail
    assert run("cuda-init-failed", with_machine(machine())) == []


def test_no_gpu_visible_skips_when_no_gpu_is_known() -> None:
    cvd = parse_visible_devices("CUDA_VISIBLE_DEVICES", "")
    outcome = run("no-gpu-visible", with_machine(machine((), cuda_visible_devices=cvd)))
    assert isinstance(outcome, Skip)


# --- driver-too-old -----------------------------------------------------------------------


def test_driver_of_a_lower_cuda_major_is_an_error_quoting_the_versions() -> None:
    finding = only("driver-too-old", with_machine(machine(driver="570.124.06", cuda=12080)))
    assert finding.severity is Severity.ERROR
    text = "\n".join(finding.evidence)
    assert "570.124.06" in text and "12080" in text and "CUDA 13.0" in text
    assert finding.data.native_driver == "580.65.06"


def test_same_major_older_minor_is_a_warning_naming_what_mvc_does_not_cover() -> None:
    facts = with_machine(
        machine(driver="550.54.15", cuda=12040), version="2.10.0+cu128", cuda="12.8"
    )
    finding = only("driver-too-old", facts)
    assert finding.severity is Severity.WARNING
    assert "CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in finding.detail
    assert finding.data.native_driver == "570.26"


def test_a_variant_the_driver_runs_only_through_mvc_is_not_called_native() -> None:
    """Driver 535 (CUDA 12.2) and torch cu130: cu126 is the variant it can run, through
    minor-version compatibility. The remedy said "CUDA 12.6 is within what this driver
    supports (CUDA 12.2)", and for a CPU build "the newest CUDA that driver 535.104.05
    (CUDA 12.2) runs natively": both false."""
    old = machine(driver="535.104.05", cuda=12020)
    too_old = next(f for f in judge(with_machine(old)).findings if f.id == "driver-too-old")
    cpu = with_machine(old, version="2.14.1+cpu", cuda=None)
    cpu_only = next(f for f in judge(cpu).findings if f.id == "cpu-only-torch")
    mvc = (
        "driver 535.104.05 (CUDA 12.2) runs CUDA 12.6 through minor-version compatibility "
        "(CUDA 12.x needs driver >= 525.60.13)"
    )
    for finding in (too_old, cpu_only):
        [install] = [r for r in finding.remedies if r.kind.value == "shell"]
        assert "--index-url https://download.pytorch.org/whl/cu126" in install.text
        assert mvc in install.summary, install.summary
        assert "natively" not in install.summary and "within what" not in install.summary
    native = with_machine(machine(), version="2.14.1+cpu", cuda=None)
    cpu_native = next(f for f in judge(native).findings if f.id == "cpu-only-torch")
    [install] = [r for r in cpu_native.remedies if r.kind.value == "shell"]
    assert "driver 580.95.05 (CUDA 13.0) runs CUDA 13.0 natively" in install.summary


def test_newer_driver_than_torch_cuda_is_quiet() -> None:
    facts = with_machine(machine(), version="2.10.0+cu128", cuda="12.8")
    assert run("driver-too-old", facts) == []


# --- gpu-arch-unsupported -----------------------------------------------------------------


def test_gpu_without_cubin_or_ptx_is_named_with_its_sm() -> None:
    old_build = ArchListFacts(source="fatbin", sm=("sm_80", "sm_90"), libraries=("lib.so",))
    finding = only("gpu-arch-unsupported", with_machine(machine((RTX_5090,), archs=old_build)))
    assert "NVIDIA GeForce RTX 5090" in finding.title and "sm_120" in finding.title
    assert any("no PTX" in e for e in finding.evidence)


def test_ptx_in_the_build_covers_a_newer_gpu() -> None:
    future = GpuFacts(0, "Future GPU", (13, 0))
    archs = dataclasses.replace(CU130_ARCHS, ptx=("compute_120",))
    assert run("gpu-arch-unsupported", with_machine(machine((future,), archs=archs))) == []


def test_unknown_arch_list_skips_with_the_reason() -> None:
    unknown = ArchListFacts(source="unknown", notes=("no table entry for torch 9.9 cu999",))
    outcome = run("gpu-arch-unsupported", with_machine(machine(archs=unknown)))
    assert isinstance(outcome, Skip) and "cu999" in outcome.reason


# --- no-gpu-visible -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "-1", "NoDevFiles", "1", "GPU-ffff"])
def test_visible_devices_hiding_every_gpu_fire(value: str) -> None:
    cvd = parse_visible_devices("CUDA_VISIBLE_DEVICES", value)
    finding = only("no-gpu-visible", with_machine(machine(cuda_visible_devices=cvd)))
    assert finding.data.value == value


@pytest.mark.parametrize("value", ["0", "GPU-1", "0,-1,2", "MIG-abcd"])
def test_visible_devices_naming_a_gpu_are_quiet(value: str) -> None:
    mig_h100 = dataclasses.replace(H100, mig_enabled=True)
    cvd = parse_visible_devices("CUDA_VISIBLE_DEVICES", value)
    facts = with_machine(machine((mig_h100,), cuda_visible_devices=cvd))
    assert run("no-gpu-visible", facts) == []


# --- visible-devices-truncated -----------------------------------------------------------


def test_an_entry_naming_no_gpu_hides_the_gpus_named_after_it() -> None:
    second = dataclasses.replace(RTX_5090, index=1)
    cvd = parse_visible_devices("CUDA_VISIBLE_DEVICES", "0,-1,1")
    finding = only(
        "visible-devices-truncated", with_machine(machine((H100, second), cuda_visible_devices=cvd))
    )
    assert finding.severity is Severity.WARNING
    assert "'-1'" in finding.title and "1 of the 3 devices" in finding.title
    assert finding.data.visible == (0,) and finding.data.hidden_gpus == (1,)
    assert finding.data.suggested == "0,1"
    assert any("names GPU 1 (NVIDIA GeForce RTX 5090)" in e for e in finding.evidence)
    remedy = next(
        r
        for r in judge(with_machine(machine((H100, second), cuda_visible_devices=cvd))).findings
        if r.id == "visible-devices-truncated"
    ).remedies
    assert remedy[0].text == "export CUDA_VISIBLE_DEVICES=0,1"


def test_indices_past_the_last_gpu_are_reported_with_what_cuda_exposes() -> None:
    # Copied from a 4-GPU machine onto this one with a single GPU.
    cvd = parse_visible_devices("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    finding = only("visible-devices-truncated", with_machine(machine(cuda_visible_devices=cvd)))
    assert finding.data.stop == "1"
    assert finding.data.ignored == ("2", "3")
    assert finding.data.hidden_gpus == ()
    assert any("cuda:0 = GPU 0 (NVIDIA H100 80GB HBM3)" in e for e in finding.evidence)


@pytest.mark.parametrize("value", ["0", "GPU-1", "0,GPU-1"])
def test_visible_devices_naming_only_gpus_here_are_quiet(value: str) -> None:
    cvd = parse_visible_devices("CUDA_VISIBLE_DEVICES", value)
    assert run("visible-devices-truncated", with_machine(machine(cuda_visible_devices=cvd))) == []


def test_truncation_leaves_hiding_everything_to_no_gpu_visible() -> None:
    cvd = parse_visible_devices("CUDA_VISIBLE_DEVICES", "-1,0")
    facts = with_machine(machine(cuda_visible_devices=cvd))
    assert isinstance(run("visible-devices-truncated", facts), Skip)
    assert run("visible-devices-truncated", with_machine(machine())) == Skip("not set")


def test_parsing_stops_at_the_first_invalid_entry() -> None:
    parsed = parse_visible_devices("CUDA_VISIBLE_DEVICES", "0,-1,2")
    assert [e.kind for e in parsed.entries] == ["index", "invalid", "index"]
    assert [e.text for e in parsed.honoured] == ["0"]
    assert not parsed.hides_all


def test_nvidia_visible_devices_void_is_parsed_as_none() -> None:
    parsed = parse_visible_devices("NVIDIA_VISIBLE_DEVICES", "void")
    assert parsed.hides_all and parsed.entries[0].kind == "none"
    assert not parse_visible_devices("NVIDIA_VISIBLE_DEVICES", "all").hides_all


# --- mig-enabled / cpu-only-torch ---------------------------------------------------------


def test_mig_mode_is_information() -> None:
    mig_h100 = dataclasses.replace(H100, mig_enabled=True)
    assert only("mig-enabled", with_machine(machine((mig_h100,)))).severity is Severity.INFO


def test_cpu_build_with_a_gpu_is_an_error_and_without_one_information() -> None:
    with_gpu = with_machine(machine(), version="2.14.1+cpu", cuda=None)
    assert only("cpu-only-torch", with_gpu).severity is Severity.ERROR
    no_gpu = with_machine(machine(()), version="2.14.1+cpu", cuda=None)
    assert only("cpu-only-torch", no_gpu).severity is Severity.INFO


def test_cpu_build_remedy_is_the_index_block_for_the_computed_variant() -> None:
    facts = with_machine(
        machine((RTX_5090,), driver="570.124.06", cuda=12080),
        healthy_facts(project=project()),
        version="2.14.1+cpu",
        cuda=None,
    )
    report = judge(facts)
    finding = next(f for f in report.findings if f.id == "cpu-only-torch")
    block = tomllib.loads(next(r.text for r in finding.remedies if r.kind.value == "toml"))
    assert block["tool"]["uv"]["index"][0]["url"] == "https://download.pytorch.org/whl/cu128"
    assert block["tool"]["uv"]["index"][0]["explicit"] is True
    assert block["tool"]["uv"]["sources"]["torch"][0]["marker"] == "sys_platform == 'linux'"
    # torch 2.14 has no cu128 build: a re-lock of the project's torch==2.14.1 on that index
    # fails (it was `uv lock --upgrade-package torch`, the follow-up `torch-doctor fix
    # --sync` ran). The requirement has to move: `uv add` does it, and locks and syncs.
    shells = [r.text for r in finding.remedies if r.kind.value == "shell"]
    assert shells == ["uv add 'torch>=2.11,<2.12'\n"]
    from doctor.fix import PlannedEdit, follow_up_commands

    [toml] = [r for r in finding.remedies if r.kind.value == "toml"]
    edit = PlannedEdit(Path("/project/pyproject.toml"), ((finding, toml),), "", "")
    assert follow_up_commands([edit]) == ["uv add 'torch>=2.11,<2.12'"]


def test_cpu_build_in_a_pip_venv_gets_an_index_command_not_a_pyproject_block() -> None:
    facts = with_machine(
        machine((RTX_5090,), driver="570.124.06", cuda=12080), version="2.14.1+cpu", cuda=None
    )
    finding = next(f for f in judge(facts).findings if f.id == "cpu-only-torch")
    assert all(r.kind.value != "toml" for r in finding.remedies)
    [command] = [r.text for r in finding.remedies if r.kind.value == "shell"]
    # torch was installed by uv (its INSTALLER), so uv pip; 2.14 has no cu128 build.
    assert command == (
        "uv pip install --python /project/.venv/bin/python --index-url "
        "https://download.pytorch.org/whl/cu128 'torch>=2.11,<2.12'"
    )


# --- knowledge ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cuda_drivers", "gpu_architectures", "torch_arch_lists"])
def test_knowledge_files_carry_sources_links_and_review_date(name: str) -> None:
    import datetime

    from doctor.knowledge import load

    data = load(name)
    assert data["reviewed"] == datetime.date(2026, 11, 24)
    sections = [data] if "source" in data else [v for v in data.values() if isinstance(v, dict)]
    assert sections
    for section in sections:
        assert section["source"]
        assert all(link.startswith("https://") for link in section["links"])


def test_every_published_variant_names_the_source_of_its_arch_list() -> None:
    from doctor.knowledge import torch_builds

    builds = torch_builds()
    assert {b.variant for b in builds} >= {"cu118", "cu126", "cu128", "cu130", "cu132"}
    assert all(b.source and b.sm for b in builds)


def test_the_index_block_marker_follows_the_platform() -> None:
    from doctor.facts import PlatformFacts

    facts = with_machine(
        machine(), healthy_facts(project=project()), version="2.14.1+cpu", cuda=None
    )
    windows = dataclasses.replace(
        facts, platform=PlatformFacts("Windows", "AMD64", "10", None, None)
    )
    for platform_facts, marker in (
        (facts, "sys_platform == 'linux'"),
        (windows, "sys_platform == 'win32'"),
    ):
        finding = next(f for f in judge(platform_facts).findings if f.id == "cpu-only-torch")
        block = tomllib.loads(next(r.text for r in finding.remedies if r.kind.value == "toml"))
        assert block["tool"]["uv"]["sources"]["torch"][0]["marker"] == marker
