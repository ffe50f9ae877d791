"""The driver and the GPUs against what this torch build needs.

One cause, one finding: when no driver answers, the checks that need one skip.
"""

from __future__ import annotations

from doctor.checks.cuda_compat import (
    build_targets,
    covering_target,
    cuda_int,
    cuda_int_text,
    driver_at_least,
    mvc_floor,
    native_driver,
    parse_cuda,
)
from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import Facts
from doctor.facts.machine import (
    GpuFacts,
    MachineFacts,
    NvmlStatus,
    VisibleDevicesFacts,
    VisibleEntry,
)
from doctor.findings import Finding, Severity
from doctor.knowledge import gpu_family, mvc_limitations

__all__ = ["visible_gpus"]

NOT_PROBED = Skip("the machine was not probed")
NO_DRIVER = Skip("no NVIDIA driver answers")

# NVML codes that mean "there is no usable driver here" rather than "the driver is broken".
ABSENT = (NvmlStatus.LIBRARY_NOT_FOUND, NvmlStatus.DRIVER_NOT_LOADED)


def _machine(facts: Facts) -> MachineFacts | Skip:
    return facts.machine if facts.machine is not None else NOT_PROBED


def _driver_answers(machine: MachineFacts) -> bool:
    return machine.nvml is not None and machine.nvml.ok


def _system(facts: Facts) -> str:
    return facts.platform.system if facts.platform is not None else "Linux"


def _torch_label(facts: Facts) -> str:
    build = facts.torch
    if build is not None and build.version:
        return f"torch {build.version}"
    dist = facts.distribution("torch")
    return f"torch {dist.version}" if dist is not None else "torch"


def _nvidia_visible_hides(machine: MachineFacts) -> VisibleDevicesFacts | None:
    nvd = machine.nvidia_visible_devices
    if nvd is not None and nvd.hides_all and machine.container is not None:
        return nvd
    return None


@check(
    "no-nvidia-driver",
    family="driver",
    summary="No NVIDIA driver answers on this machine: torch can only use the CPU.",
    label="NVIDIA driver present",
)
def no_nvidia_driver(facts: Facts) -> Outcome:
    machine = _machine(facts)
    if isinstance(machine, Skip):
        return machine
    nvml = machine.nvml
    if nvml is None or nvml.status not in ABSENT:
        return []
    cuda = machine.cuda_driver
    if cuda is not None and cuda.loaded and cuda.init_result == 0:
        return []  # libcuda works without NVML (rare, e.g. some WSL setups): torch can run
    if _nvidia_visible_hides(machine) is not None and machine.pci_devices:
        return []  # no-gpu-visible tells that story
    cuda_build = facts.torch is not None and facts.torch.is_cuda_build
    evidence = [f"NVML: {nvml.error_text or nvml.status} (return code {nvml.error_code})"]
    if cuda is not None and not cuda.loaded and cuda.load_error:
        evidence.append(f"libcuda.so.1 cannot be loaded: {cuda.load_error}")
    elif cuda is not None and cuda.init_result not in (None, 0):
        evidence.append(f"cuInit returned {cuda.init_result} ({cuda.error_name})")
    evidence.append(
        "device nodes: "
        + (", ".join(machine.device_nodes) if machine.device_nodes else "no /dev/nvidia*")
    )
    for device in machine.pci_devices:
        evidence.append(
            f"an NVIDIA GPU is on the PCI bus at {device.address} (device {device.device_id}), "
            f"bound to {device.driver or 'no kernel driver'}"
        )
    if machine.container:
        evidence.append(f"running in a container ({machine.container})")
    if machine.wsl:
        evidence.append("running under WSL: the driver comes from Windows via /usr/lib/wsl/lib")
    if cuda_build:
        detail = (
            f"{_torch_label(facts)} is a CUDA build, but no NVIDIA driver answers here, so "
            "torch.cuda.is_available() is False and everything runs on the CPU. torch warns: "
            "`Found no NVIDIA driver on your system. Please check that you have an NVIDIA "
            "GPU and installed a driver`."
        )
    else:
        detail = "No NVIDIA driver answers on this machine; torch here does not need one."
    return [
        Finding(
            id="no-nvidia-driver",
            severity=Severity.WARNING if cuda_build else Severity.INFO,
            title="no NVIDIA driver found" + (": torch will run on the CPU" if cuda_build else ""),
            detail=detail,
            evidence=tuple(evidence),
            data={
                "nvml_status": nvml.status,
                "cuda_build": cuda_build,
                "torch_cuda": facts.torch.cuda if facts.torch is not None else None,
                "pci_devices": [d.address for d in machine.pci_devices],
                "container": machine.container,
                "wsl": machine.wsl,
            },
        )
    ]


@check(
    "nvml-driver-mismatch",
    family="driver",
    summary="The NVIDIA user-space libraries and the loaded kernel module are different versions.",
    label="driver libraries match the kernel module",
)
def nvml_driver_mismatch(facts: Facts) -> Outcome:
    machine = _machine(facts)
    if isinstance(machine, Skip):
        return machine
    nvml = machine.nvml
    if nvml is None or nvml.status != NvmlStatus.RM_VERSION_MISMATCH:
        return []
    evidence = [
        f"nvmlInit returned {nvml.error_code}: {nvml.error_text}",
        "nvidia-smi prints `Failed to initialize NVML: Driver/library version mismatch`",
    ]
    if nvml.library_path:
        evidence.append(f"user-space library: {nvml.library_path}")
    kernel = machine.kernel_module_version or machine.proc_driver_version
    if kernel:
        evidence.append(f"loaded kernel module: {kernel} (/sys/module/nvidia/version)")
    cuda = machine.cuda_driver
    if cuda is not None and cuda.init_result not in (None, 0):
        evidence.append(
            f"cuInit returned {cuda.init_result} ({cuda.error_name}: {cuda.error_text})"
        )
    return [
        Finding(
            id="nvml-driver-mismatch",
            severity=Severity.ERROR,
            title="driver libraries and kernel module differ: Driver/library version mismatch",
            detail=(
                "The NVIDIA user-space libraries (libnvidia-ml, libcuda) are not the version of "
                "the kernel module that is loaded, usually because the driver was upgraded "
                "without a reboot, or a container carries its own driver libraries. Neither "
                "NVML nor CUDA can start, so torch sees no GPU."
            ),
            evidence=tuple(evidence),
            data={"library_path": nvml.library_path, "kernel_module": kernel},
        )
    ]


@check(
    "cuda-init-failed",
    family="driver",
    summary="cuInit, the CUDA driver's first call, fails.",
    label="CUDA driver initialises",
)
def cuda_init_failed(facts: Facts) -> Outcome:
    machine = _machine(facts)
    if isinstance(machine, Skip):
        return machine
    cuda = machine.cuda_driver
    if cuda is not None and not cuda.loaded and _driver_answers(machine):
        return [_libcuda_missing(facts, machine, cuda.load_error)]
    if cuda is None or not cuda.loaded:
        return NO_DRIVER
    if cuda.init_result == 0 and cuda.probe_error is None:
        return []
    nvml = machine.nvml
    if nvml is not None and nvml.status == NvmlStatus.RM_VERSION_MISMATCH:
        return Skip("the driver/library mismatch is reported by nvml-driver-mismatch")
    if nvml is not None and nvml.status in ABSENT:
        return Skip("no NVIDIA driver answers (no-nvidia-driver)")
    cvd = machine.cuda_visible_devices
    if cuda.init_result == 100 and cvd is not None and _hidden_by(cvd, machine.gpus):
        return Skip("CUDA_VISIBLE_DEVICES hides every GPU (no-gpu-visible)")
    if cuda.probe_error is not None:
        what = cuda.probe_error
        evidence = [what]
    else:
        what = f"cuInit(0) returned {cuda.init_result} {cuda.error_name or ''}".rstrip()
        evidence = [f"{what}: {cuda.error_text or 'no error text'}"]
    if cuda.library_path:
        evidence.append(f"libcuda.so.1 loaded from {cuda.library_path}")
    ld_path = facts.environment.get("LD_LIBRARY_PATH", "")
    compat = [p for p in ld_path.split(":") if "compat" in p]
    if compat:
        evidence.append(
            "LD_LIBRARY_PATH holds a CUDA forward-compatibility directory: " + ", ".join(compat)
        )
    if nvml is not None and nvml.driver_version:
        evidence.append(f"NVML reports driver {nvml.driver_version}")
    elif nvml is not None and nvml.error_text:
        evidence.append(f"NVML fails too: {nvml.error_text} ({nvml.status})")
    return [
        Finding(
            id="cuda-init-failed",
            severity=Severity.ERROR,
            title=f"the CUDA driver does not initialise: {cuda.error_name or 'cuInit failed'}",
            detail=(
                "cuInit is the first call torch makes into the CUDA driver; while it fails, "
                "torch.cuda.is_available() is False. " + _init_error_meaning(cuda.init_result)
            ),
            evidence=tuple(evidence),
            data={
                "code": cuda.init_result,
                "name": cuda.error_name,
                "text": cuda.error_text,
                "library_path": cuda.library_path,
                "compat_paths": compat,
                "probe_error": cuda.probe_error,
            },
        )
    ]


def _libcuda_missing(facts: Facts, machine: MachineFacts, load_error: str | None) -> Finding:
    """NVML answers but the CUDA driver library is absent: half a driver."""
    evidence = [f"libcuda.so.1 cannot be loaded: {load_error or 'unknown reason'}"]
    if machine.nvml is not None and machine.nvml.driver_version:
        evidence.append(f"NVML answers: driver {machine.nvml.driver_version}")
    capabilities = facts.environment.get("NVIDIA_DRIVER_CAPABILITIES")
    lacks_compute = capabilities is not None and not (
        {"compute", "all"} & {c.strip() for c in capabilities.split(",")}
    )
    if capabilities is not None:
        evidence.append(f"NVIDIA_DRIVER_CAPABILITIES={capabilities!r}")
    return Finding(
        id="cuda-init-failed",
        severity=Severity.ERROR,
        title="the CUDA driver library libcuda.so.1 cannot be loaded",
        detail=(
            "NVML answers, so the kernel driver is there, but the CUDA part of the driver "
            "(libcuda.so.1) is not on the loader's path, so torch cannot initialise CUDA. "
            + (
                "In a container, NVIDIA_DRIVER_CAPABILITIES without `compute` leaves it out."
                if lacks_compute
                else "The driver's compute libraries are missing or not registered with ldconfig."
            )
        ),
        evidence=tuple(evidence),
        data={
            "code": None,
            "name": None,
            "text": load_error,
            "library_path": None,
            "compat_paths": [],
            "probe_error": None,
            "libcuda_missing": True,
            "capabilities_lack_compute": lacks_compute,
        },
    )


def _init_error_meaning(code: int | None) -> str:
    meanings = {
        803: "Error 803 means the user-space CUDA driver (libcuda.so.1) and the kernel "
        "module are different versions: the driver was upgraded without a reboot, or a "
        "container or cuda-compat libcuda shadows the system one.",
        804: "Error 804 means a cuda-compat forward-compatibility libcuda was used on a GPU "
        "that does not support forward compatibility (only datacenter GPUs do).",
        100: "No CUDA-capable device is visible to the driver.",
        999: "An unknown error often follows a suspend/resume or a missing nvidia_uvm module.",
        34: "libcuda.so.1 is the toolkit's stub library, not the driver.",
    }
    return meanings.get(code or -1, "")


def _matches(entry_text: str, gpu: GpuFacts) -> bool:
    return gpu.uuid is not None and gpu.uuid.startswith(entry_text)


def _named_gpu(entry: VisibleEntry, gpus: tuple[GpuFacts, ...]) -> GpuFacts | None:
    """The GPU one CUDA_VISIBLE_DEVICES entry names here, or None (CUDA stops there)."""
    if entry.kind == "index" and entry.index is not None and entry.index < len(gpus):
        return gpus[entry.index]
    if entry.kind in ("gpu-uuid", "mig-uuid"):
        found = [g for g in gpus if _matches(entry.text, g)]
        if entry.kind == "mig-uuid" and not found:
            # MIG device UUIDs are not the parent GPU's: NVML's GPU list cannot refute them.
            found = [g for g in gpus if g.mig_enabled]
        return found[0] if found else None
    return None


def visible_gpus(cvd: VisibleDevicesFacts, gpus: tuple[GpuFacts, ...]) -> list[GpuFacts]:
    """The GPUs CUDA exposes under CUDA_VISIBLE_DEVICES (it stops at the first bad entry)."""
    visible: list[GpuFacts] = []
    for entry in cvd.honoured:
        gpu = _named_gpu(entry, gpus)
        if gpu is None:
            break
        visible.append(gpu)
    return visible


def _hidden_by(cvd: VisibleDevicesFacts, gpus: tuple[GpuFacts, ...]) -> bool:
    return bool(gpus) and (cvd.hides_all or not visible_gpus(cvd, gpus))


@check(
    "no-gpu-visible",
    family="driver",
    summary="GPUs exist, but CUDA_VISIBLE_DEVICES or NVIDIA_VISIBLE_DEVICES hides all of them.",
    label="GPUs visible to CUDA",
)
def no_gpu_visible(facts: Facts) -> Outcome:
    machine = _machine(facts)
    if isinstance(machine, Skip):
        return machine
    cvd = machine.cuda_visible_devices
    nvd = _nvidia_visible_hides(machine)
    gpus = machine.gpus
    if not machine.gpu_present:
        return Skip("no GPU is known")
    if cvd is not None and _hidden_by(cvd, gpus):
        reason = cvd.reason or (
            f"CUDA_VISIBLE_DEVICES={cvd.value!r} names none of the {len(gpus)} GPU(s) here"
        )
        variable, value = cvd.variable, cvd.value
    elif nvd is not None and machine.pci_devices and not _driver_answers(machine):
        reason = nvd.reason or ""
        variable, value = nvd.variable, nvd.value
    else:
        return []
    evidence = [reason]
    for gpu in gpus:
        evidence.append(f"NVML sees GPU {gpu.index}: {gpu.name} ({gpu.uuid})")
    for device in machine.pci_devices if not gpus else ():
        evidence.append(f"an NVIDIA GPU is on the PCI bus at {device.address}")
    cuda = machine.cuda_driver
    if cuda is not None and cuda.init_result == 100:
        evidence.append(f"cuInit returned 100 ({cuda.error_name}: {cuda.error_text})")
    return [
        Finding(
            id="no-gpu-visible",
            severity=Severity.ERROR,
            title=f"{variable} hides every GPU from CUDA",
            detail=(
                f"This machine has {len(gpus) or len(machine.pci_devices)} NVIDIA GPU(s), but "
                f"{variable} leaves CUDA none, so torch.cuda.is_available() is False and "
                "torch.cuda.device_count() is 0. nvidia-smi still lists every GPU because "
                "NVML ignores the variable."
            ),
            evidence=tuple(evidence),
            data={
                "variable": variable,
                "value": value,
                "gpu_indices": [g.index for g in gpus],
                "gpu_uuids": [g.uuid for g in gpus if g.uuid],
            },
        )
    ]


@check(
    "visible-devices-truncated",
    family="driver",
    summary="CUDA_VISIBLE_DEVICES names devices CUDA never exposes: it stops at the first "
    "entry that names no GPU.",
    label="CUDA_VISIBLE_DEVICES names only GPUs here",
)
def visible_devices_truncated(facts: Facts) -> Outcome:
    machine = _machine(facts)
    if isinstance(machine, Skip):
        return machine
    cvd = machine.cuda_visible_devices
    gpus = machine.gpus
    if cvd is None:
        return Skip("not set")
    if not gpus:
        return Skip("no GPU is known")
    if _hidden_by(cvd, gpus):
        return Skip("it hides every GPU (no-gpu-visible)")
    visible = visible_gpus(cvd, gpus)
    if len(visible) == len(cvd.entries):
        return []
    stop = cvd.entries[len(visible)]
    ignored = cvd.entries[len(visible) + 1 :]
    hidden = [
        (entry, gpu)
        for entry in ignored
        if (gpu := _named_gpu(entry, gpus)) is not None and gpu not in visible
    ]
    keep = [e.text for e in cvd.entries if _named_gpu(e, gpus) is not None]
    evidence = [
        f"CUDA_VISIBLE_DEVICES={cvd.value!r}: CUDA reads it up to {stop.text!r}, which names "
        "no GPU here, and ignores everything after it",
        "CUDA exposes: "
        + ", ".join(f"cuda:{n} = GPU {g.index} ({g.name})" for n, g in enumerate(visible)),
    ]
    for entry, gpu in hidden:
        evidence.append(
            f"{entry.text!r} names GPU {gpu.index} ({gpu.name}), hidden because it comes "
            f"after {stop.text!r}"
        )
    evidence.append(f"NVML sees {len(gpus)} GPU(s)")
    shown = f"{len(visible)} of the {len(cvd.entries)} devices it names"
    return [
        Finding(
            id="visible-devices-truncated",
            severity=Severity.WARNING,
            title=f"CUDA_VISIBLE_DEVICES stops at {stop.text!r}: CUDA sees {shown}",
            detail=(
                "CUDA reads CUDA_VISIBLE_DEVICES from the left and stops at the first entry "
                "that names no device (an index past the last GPU, a UUID of a GPU that is not "
                "here, -1). torch.cuda.device_count() is "
                f"{len(visible)}, and code that asks for a later device fails with `CUDA "
                "error: invalid device ordinal`."
            ),
            evidence=tuple(evidence),
            data={
                "variable": cvd.variable,
                "value": cvd.value,
                "stop": stop.text,
                "visible": [g.index for g in visible],
                "ignored": [e.text for e in ignored],
                "hidden_gpus": [g.index for _, g in hidden],
                "suggested": ",".join(dict.fromkeys(keep)),
            },
        )
    ]


@check(
    "driver-too-old",
    family="driver",
    summary="The driver supports an older CUDA than the one torch was built with.",
    label="driver supports torch's CUDA",
)
def driver_too_old(facts: Facts) -> Outcome:
    machine = _machine(facts)
    if isinstance(machine, Skip):
        return machine
    build = facts.torch
    if build is None or not build.cuda:
        return Skip("torch is not a CUDA build")
    torch_cuda = parse_cuda(build.cuda)
    driver_cuda = machine.driver_cuda_version
    if torch_cuda is None or not driver_cuda:
        return NO_DRIVER
    supported = cuda_int(driver_cuda)
    if supported >= torch_cuda:
        return []
    system = _system(facts)
    driver = machine.driver_version
    native = native_driver(torch_cuda, system)
    floor = mvc_floor(torch_cuda[0], system)
    torch_text = "{}.{}".format(*torch_cuda)
    evidence = [
        f"driver {driver or 'unknown'} supports CUDA {cuda_int_text(driver_cuda)} "
        f"(nvmlSystemGetCudaDriverVersion_v2 = {driver_cuda})",
        f"{_torch_label(facts)} is built with CUDA {torch_text}",
    ]
    if native:
        evidence.append(f"CUDA {torch_text} natively needs driver >= {native} on {system}")
    below_floor = floor is not None and driver is not None and not driver_at_least(driver, floor)
    if supported[0] < torch_cuda[0] or below_floor:
        if floor is not None:
            evidence.append(
                f"CUDA {torch_cuda[0]}.x minor-version compatibility needs driver >= {floor}"
            )
        return [
            Finding(
                id="driver-too-old",
                severity=Severity.ERROR,
                title=f"{f'driver {driver}' if driver else 'the driver'} is too old for "
                f"CUDA {torch_text}",
                detail=(
                    f"The driver supports CUDA {cuda_int_text(driver_cuda)} and torch needs "
                    f"CUDA {torch_text}. Minor-version compatibility only works within one "
                    "major version and above its driver floor, so CUDA cannot start: torch "
                    "warns `The NVIDIA driver on your system is too old (found version "
                    f"{driver_cuda})` and torch.cuda.is_available() is False."
                ),
                evidence=tuple(evidence),
                data=_driver_data(driver, driver_cuda, torch_text, native, floor, blocking=True),
            )
        ]
    evidence.append(
        f"driver {driver} meets the CUDA {torch_cuda[0]}.x "
        f"minor-version-compatibility floor {floor}"
    )
    return [
        Finding(
            id="driver-too-old",
            severity=Severity.WARNING,
            title=f"driver supports CUDA {cuda_int_text(driver_cuda)}, torch is built with "
            f"{torch_text}: minor-version compatibility only",
            detail=(
                f"CUDA {torch_text} runs on this CUDA {cuda_int_text(driver_cuda)} driver through "
                "minor-version compatibility, which does not cover " + mvc_limitations() + "."
            ),
            evidence=tuple(evidence),
            data=_driver_data(driver, driver_cuda, torch_text, native, floor, blocking=False),
        )
    ]


def _driver_data(
    driver: str | None,
    driver_cuda: int,
    torch_cuda: str,
    native: str | None,
    floor: str | None,
    *,
    blocking: bool,
) -> dict[str, object]:
    return {
        "driver_version": driver,
        "driver_cuda": driver_cuda,
        "torch_cuda": torch_cuda,
        "native_driver": native,
        "mvc_floor": floor,
        "blocking": blocking,
    }


@check(
    "gpu-arch-unsupported",
    family="driver",
    summary="A GPU has neither a matching cubin nor usable PTX in this torch build.",
    label="torch carries code for every GPU",
)
def gpu_arch_unsupported(facts: Facts) -> Outcome:
    machine = _machine(facts)
    if isinstance(machine, Skip):
        return machine
    build = facts.torch
    if build is None or not build.is_cuda_build:
        return Skip("torch is not a CUDA build")
    if not machine.gpus:
        return Skip("no GPU is known")
    archs = machine.torch_archs
    if archs is None or archs.source == "unknown":
        notes = "; ".join(archs.notes) if archs is not None else ""
        return Skip("the GPU code in this torch build is unknown" + (f": {notes}" if notes else ""))
    targets = build_targets(archs)
    unsupported = [
        g
        for g in machine.gpus
        if g.compute_capability is not None
        and covering_target(g.compute_capability, targets) is None
    ]
    if not unsupported:
        return []
    carried = " ".join((*archs.sm, *archs.ptx)) or "nothing"
    where = (
        f"read from the fat binaries in {', '.join(archs.libraries)}"
        if archs.source == "fatbin"
        else f"from torch-doctor's table ({archs.table_key}; {archs.table_source})"
    )
    evidence = []
    for gpu in unsupported:
        family = gpu_family(gpu.compute_capability) if gpu.compute_capability else None
        evidence.append(
            f"GPU {gpu.index}: {gpu.name}, compute capability {gpu.cc_text} ({gpu.sm}"
            + (f", {family}" if family else "")
            + ")"
        )
    evidence.append(f"this build carries {carried} ({where})")
    first = unsupported[0]
    too_old = all(
        g.compute_capability is not None
        and all(g.compute_capability < t.capability for t in targets)
        for g in unsupported
    )
    if not archs.ptx and not too_old:
        evidence.append("no PTX in this build: the driver has nothing to compile for a newer GPU")
    return [
        Finding(
            id="gpu-arch-unsupported",
            severity=Severity.ERROR,
            title=f"{first.name} ({first.sm}) has no kernels in {_torch_label(facts)}"
            + (f" and {len(unsupported) - 1} more GPU(s)" if len(unsupported) > 1 else ""),
            detail=(
                f"A cubin runs only on GPUs of its own major version with an equal or higher "
                f"minor, and PTX only on GPUs at least as new as it. This build has neither for "
                f"{first.sm}"
                + (" (the GPU is older than anything this build targets)" if too_old else "")
                + ". torch warns `"
                f"{first.name} with CUDA capability {first.sm} is not compatible with the "
                "current PyTorch installation` and kernels fail with `CUDA error: no kernel "
                "image is available for execution on the device`."
            ),
            evidence=tuple(evidence),
            data={
                "gpus": [
                    {"index": g.index, "name": g.name, "sm": g.sm, "capability": g.cc_text}
                    for g in unsupported
                ],
                "archs": list(archs.sm),
                "ptx": list(archs.ptx),
                "arch_source": archs.source,
                "too_old": too_old,
            },
        )
    ]


@check(
    "mig-enabled",
    family="driver",
    summary="A GPU is in MIG mode: CUDA sees its MIG instances, one per process.",
    label="MIG mode",
)
def mig_enabled(facts: Facts) -> Outcome:
    machine = _machine(facts)
    if isinstance(machine, Skip):
        return machine
    if not _driver_answers(machine):
        return NO_DRIVER
    migs = [g for g in machine.gpus if g.mig_enabled]
    if not migs:
        return []
    return [
        Finding(
            id="mig-enabled",
            severity=Severity.INFO,
            title="MIG mode is enabled on " + ", ".join(f"GPU {g.index} ({g.name})" for g in migs),
            detail=(
                "A GPU in MIG mode is split into instances. A CUDA process enumerates only one "
                "MIG instance, so torch.cuda.device_count() can be 1 and `cuda:1` fails with "
                "`invalid device ordinal`; CUDA_VISIBLE_DEVICES must name a MIG device UUID "
                "(MIG-...), and a GPU in MIG mode without GPU/compute instances exposes nothing."
            ),
            evidence=tuple(f"GPU {g.index}: {g.name} ({g.uuid}) MIG mode enabled" for g in migs),
            data={"gpus": [{"index": g.index, "name": g.name, "uuid": g.uuid} for g in migs]},
        )
    ]
