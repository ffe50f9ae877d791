"""Is torch installed, and are the wheels it requires here installed, at its pins, whole?"""

from __future__ import annotations

from collections.abc import Sequence

from doctor.checks.expectations import CUDA_TOOLKIT, Expectations, ExpectedWheel, expected_wheels
from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import Facts
from doctor.findings import Finding, Severity

__all__: list[str] = []

NO_TORCH = Skip("torch is not installed")
NOT_PROBED = Skip("the inspected interpreter could not be probed")


def _wheel_data(wheel: ExpectedWheel) -> dict[str, object]:
    return {
        "name": wheel.name,
        "requirement": wheel.requirement,
        "install": wheel.install_spec,
        "required_by": wheel.required_by,
        "installed_version": wheel.installed.version if wheel.installed else None,
        "installer": wheel.installed.installer if wheel.installed else None,
    }


def _torch_version(facts: Facts) -> str:
    """torch/version.py's version (with the +cu130 tag PyPI's dist-info lacks), else the dist's."""
    if facts.torch is not None and facts.torch.version:
        return facts.torch.version
    torch = facts.distribution("torch")
    return torch.version if torch is not None else "(unknown version)"


def _inspected(facts: Facts) -> str:
    return facts.interpreter.executable if facts.interpreter else "the inspected interpreter"


@check(
    "torch-not-installed",
    family="wheels",
    summary="The inspected environment has no torch distribution.",
    label="torch installed",
)
def torch_not_installed(facts: Facts) -> Outcome:
    if facts.interpreter is None:
        return NOT_PROBED
    if facts.distribution("torch") is not None:
        return []
    evidence = [f"no torch-*.dist-info on the sys.path of {_inspected(facts)}"]
    if facts.torch is not None:
        evidence.append(
            f"a torch package directory exists at {facts.torch.package_dir} "
            "but no distribution metadata: it was not installed by pip or uv"
        )
    locked = facts.project is not None and bool(facts.project.locked_torch)
    if locked:
        evidence.append("the project's uv.lock records torch: the environment is not synced")
    return [
        Finding(
            id="torch-not-installed",
            severity=Severity.ERROR,
            title="torch is not installed in the inspected environment",
            detail=(
                "torch-doctor inspects the environment where torch should run, and this one "
                "has no torch. Either a different environment was meant (use --python), or "
                "torch still has to be installed."
            ),
            evidence=tuple(evidence),
            data={"locked": locked, "stray_package_dir": facts.torch is not None},
        )
    ]


def _cuda_expectations(facts: Facts) -> Skip | Expectations:
    if facts.interpreter is None:
        return NOT_PROBED
    torch = facts.distribution("torch")
    if torch is None:
        return NO_TORCH
    if torch.error is not None:
        return Skip(f"torch's metadata cannot be used: {torch.error}")
    expectations = expected_wheels(facts)
    if expectations is None:
        return Skip("the inspected interpreter could not be probed")
    return expectations


@check(
    "missing-cuda-wheel",
    family="wheels",
    summary="A CUDA wheel that torch requires on this platform is not installed.",
    label="CUDA wheels installed",
)
def missing_cuda_wheel(facts: Facts) -> Outcome:
    expectations = _cuda_expectations(facts)
    if isinstance(expectations, Skip):
        return expectations
    missing = [w for w in expectations.cuda if w.installed is None]
    if not missing and not expectations.toolkit_extras_unknown:
        return []
    evidence = [f"{w.requirement} (required by {w.required_by}): not installed" for w in missing]
    detail = (
        f"torch {_torch_version(facts)} declares these CUDA wheels for this "
        "platform, and they are not installed. torch's CUDA libraries load from them, so "
        "`import torch` fails with errors such as `libcudnn.so.9: cannot open shared "
        "object file`."
    )
    if expectations.toolkit_extras_unknown:
        extras = ", ".join(expectations.toolkit_extras_unknown)
        detail += (
            f" {CUDA_TOOLKIT} itself is missing, so the libraries its extras bring "
            f"({extras}) cannot be named with their versions until it is installed."
        )
    return [
        Finding(
            id="missing-cuda-wheel",
            severity=Severity.ERROR,
            title=f"{len(missing)} CUDA wheel{'s' if len(missing) != 1 else ''} "
            "required by torch not installed",
            detail=detail,
            evidence=tuple(evidence),
            data={
                "missing": [_wheel_data(w) for w in missing],
                "toolkit_extras_unknown": list(expectations.toolkit_extras_unknown),
            },
        )
    ]


@check(
    "cuda-wheel-version-mismatch",
    family="wheels",
    summary="An installed CUDA wheel's version does not satisfy torch's pin.",
    label="CUDA wheel versions match torch's pins",
)
def cuda_wheel_version_mismatch(facts: Facts) -> Outcome:
    expectations = _cuda_expectations(facts)
    if isinstance(expectations, Skip):
        return expectations
    wrong = [w for w in expectations.cuda if w.version_ok is False]
    if not wrong:
        return []
    return [
        Finding(
            id="cuda-wheel-version-mismatch",
            severity=Severity.ERROR,
            title=f"{len(wrong)} CUDA wheel{'s' if len(wrong) != 1 else ''} at the wrong version",
            detail=(
                "torch was built and tested against exact versions of its CUDA libraries. "
                "Another version of the same wheel can miss symbols torch needs "
                "(`undefined symbol: ...`) or behave differently. This usually means "
                "another package or a manual install replaced the pinned wheel."
            ),
            evidence=tuple(
                f"{w.name} {w.installed.version} installed; "  # type: ignore[union-attr]
                f"{w.required_by} requires {w.name}{w.specifier}"
                for w in wrong
            ),
            data={"mismatched": [_wheel_data(w) for w in wrong]},
        )
    ]


@check(
    "cuda-wheel-files-missing",
    family="wheels",
    summary="An installed CUDA wheel lacks files that its RECORD lists.",
    label="installed wheels complete",
)
def cuda_wheel_files_missing(facts: Facts) -> Outcome:
    expectations = _cuda_expectations(facts)
    if isinstance(expectations, Skip):
        return expectations
    torch = facts.distribution("torch")
    broken: list[ExpectedWheel] = [w for w in expectations.cuda if w.files_missing]
    torch_missing = torch.record.missing_count if torch and torch.record else 0
    if not broken and not torch_missing:
        return []
    evidence = []
    for w in broken:
        record = w.installed.record  # type: ignore[union-attr]
        assert record is not None
        evidence.append(_files_evidence(w.name, record.missing_count, record.files, record.missing))
    if torch and torch.record and torch_missing:
        evidence.append(
            _files_evidence(
                "torch", torch.record.missing_count, torch.record.files, torch.record.missing
            )
        )
    names = [w.name for w in broken] + (["torch"] if torch_missing else [])
    return [
        Finding(
            id="cuda-wheel-files-missing",
            severity=Severity.ERROR,
            title="installed wheels are missing files: " + ", ".join(names),
            detail=(
                "These distributions are installed, but files listed in their RECORD are "
                "gone: deleted by hand, by a cleanup script, or overwritten by another "
                "wheel's uninstall (nvidia wheels share directories). A missing shared "
                "library fails exactly like a missing wheel."
            ),
            evidence=tuple(evidence),
            data={"packages": names},
        )
    ]


def _files_evidence(name: str, missing: int, total: int, examples: Sequence[str]) -> str:
    shown = ", ".join(examples[:3])
    more = f", and {missing - 3} more" if missing > 3 else ""
    return f"{name}: {missing} of {total} files in RECORD are missing ({shown}{more})"


@check(
    "missing-torch-dependency",
    family="wheels",
    summary="A non-CUDA requirement of torch is missing or at a version torch does not accept.",
    label="torch's Python dependencies",
)
def missing_torch_dependency(facts: Facts) -> Outcome:
    expectations = _cuda_expectations(facts)
    if isinstance(expectations, Skip):
        return expectations
    missing = [w for w in expectations.other if w.installed is None]
    wrong = [w for w in expectations.other if w.version_ok is False]
    if not missing and not wrong:
        return []
    evidence = [f"{w.requirement}: not installed" for w in missing]
    evidence += [
        f"{w.name} {w.installed.version} installed; torch requires {w.name}{w.specifier}"  # type: ignore[union-attr]
        for w in wrong
    ]
    return [
        Finding(
            id="missing-torch-dependency",
            severity=Severity.ERROR if missing else Severity.WARNING,
            title="torch's own Python dependencies are incomplete",
            detail=(
                "torch imports these packages; without them `import torch` fails before any "
                "CUDA library is touched."
            ),
            evidence=tuple(evidence),
            data={"missing": [_wheel_data(w) for w in missing + wrong]},
        )
    ]


@check(
    "cpu-only-torch",
    family="wheels",
    summary="The installed torch is a CPU-only build.",
    label="torch built with CUDA",
)
def cpu_only_torch(facts: Facts) -> Outcome:
    if facts.interpreter is None:
        return NOT_PROBED
    build = facts.torch
    if build is None or facts.distribution("torch") is None:
        return NO_TORCH
    if build.error is not None and build.version is None:
        return Skip(f"torch's build is unknown: {build.error}")
    if build.is_cuda_build or build.hip:
        return []
    tag = build.local_tag
    evidence = [f"torch/version.py: __version__ = {build.version!r}, cuda = None"]
    if "libtorch_cuda.so" not in build.lib_files:
        evidence.append("torch/lib has no libtorch_cuda.so")
    # With an NVIDIA GPU here, a CPU build is a mistake, not a choice (catalogue entry 17).
    machine = facts.machine
    gpus = machine.gpus if machine is not None else ()
    gpu_present = machine is not None and machine.gpu_present
    if machine is not None:
        evidence += [f"GPU {g.index}: {g.name}, compute capability {g.cc_text}" for g in gpus]
        if not gpus:
            evidence += [
                f"an NVIDIA GPU is on the PCI bus at {d.address}" for d in machine.pci_devices
            ]
    return [
        Finding(
            id="cpu-only-torch",
            severity=Severity.ERROR if gpu_present else Severity.INFO,
            title=f"torch {build.version} is a CPU-only build"
            + (" on a machine with an NVIDIA GPU" if gpu_present else ""),
            detail=(
                "This torch was built without CUDA: it never uses a GPU, whatever the driver. "
                + (
                    "Its local version tag +cpu says it came from the CPU index."
                    if tag == "cpu"
                    else "On Windows and macOS, PyPI's torch wheels are CPU-only."
                )
                + (
                    " This machine has an NVIDIA GPU, so `torch.cuda.is_available()` is False "
                    "for no good reason (`AssertionError: Torch not compiled with CUDA enabled`)."
                    if gpu_present
                    else ""
                )
            ),
            evidence=tuple(evidence),
            data={
                "version": build.version,
                "gpu_present": gpu_present,
                "capabilities": [g.cc_text for g in gpus if g.cc_text],
                "driver_version": machine.driver_version if machine is not None else None,
                "driver_cuda": machine.driver_cuda_version if machine is not None else None,
            },
        )
    ]
