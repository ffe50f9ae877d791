"""The driver and the GPUs against what this torch build needs.

One cause, one finding: the checks that need a driver require the ones that say there is
none (or that it is broken), and are skipped with "see <id>" when those fail.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from doctor.checks.needs import DRIVER_ABSENT
from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context
from doctor.derive.cuda_compat import (
    build_targets,
    cuda_int,
    cuda_int_text,
    driver_at_least,
    mvc_floor,
    native_driver,
    parse_cuda,
)
from doctor.derive.gpus import named_gpu
from doctor.facts.machine import MachineFacts, NvmlStatus, VisibleDevicesFacts
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge import cuinit_meaning, driver_download_url, gpu_family, mvc_limitations
from doctor.remedies import start_container_with_gpus
from doctor.remedies.variants import (
    capabilities_text,
    choose_variant,
    driver_runs_text,
    variant_remedies,
)

__all__ = [
    "CudaInitFailed",
    "DriverTooOld",
    "GpuArchUnsupported",
    "MigEnabled",
    "NoGpuVisible",
    "NoNvidiaDriver",
    "NvmlDriverMismatch",
    "VisibleDevicesTruncated",
]

NO_DRIVER = Skip("no NVIDIA driver answers")
DRIVER = frozenset({"driver"})


def _machine(ctx: Context) -> MachineFacts:
    # Every check here requires "machine": the runner skipped it when there is none.
    assert ctx.machine is not None
    return ctx.machine


def _driver_answers(machine: MachineFacts) -> bool:
    return machine.nvml is not None and machine.nvml.ok


def _system(ctx: Context) -> str:
    return ctx.facts.platform.system if ctx.facts.platform is not None else "Linux"


def _nvidia_visible_hides(machine: MachineFacts) -> VisibleDevicesFacts | None:
    nvd = machine.nvidia_visible_devices
    if nvd is not None and nvd.hides_all and machine.container is not None:
        return nvd
    return None


# --- no-gpu-visible ------------------------------------------------------------------------


@dataclass(frozen=True)
class NoGpuVisible(Payload):
    variable: str
    value: str
    gpu_indices: tuple[int, ...]
    gpu_uuids: tuple[str, ...]
    container: str | None  # the container engine, when NVIDIA_VISIBLE_DEVICES hides them

    def subjects(self) -> frozenset[str]:
        return DRIVER


@check(
    "no-gpu-visible",
    severities=(Severity.ERROR,),
    family="driver",
    summary="GPUs exist, but CUDA_VISIBLE_DEVICES or NVIDIA_VISIBLE_DEVICES hides all of them.",
    label="GPUs are visible to CUDA",
    payload=NoGpuVisible,
    requires=("machine", "gpu-present"),
)
def no_gpu_visible(ctx: Context) -> Outcome:
    machine = _machine(ctx)
    cvd = machine.cuda_visible_devices
    nvd = _nvidia_visible_hides(machine)
    gpus = machine.gpus
    if cvd is not None and ctx.gpus_hidden:
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
            data=NoGpuVisible(
                variable=variable,
                value=value,
                gpu_indices=tuple(g.index for g in gpus),
                gpu_uuids=tuple(g.uuid for g in gpus if g.uuid),
                container=machine.container,
            ),
        )
    ]


@remedy("no-gpu-visible")
def _no_gpu_visible(finding: Finding[NoGpuVisible], ctx: Context) -> list[Remedy]:
    variable = finding.data.variable
    indices = [str(i) for i in finding.data.gpu_indices]
    if variable == "NVIDIA_VISIBLE_DEVICES":
        return [
            Remedy(
                RemedyKind.TEXT,
                "start the container with GPUs",
                "NVIDIA_VISIBLE_DEVICES is read by the container runtime when the container "
                "starts, so changing it inside has no effect: start the container again with "
                "the GPUs.",
            ),
            start_container_with_gpus(finding.data.container),
        ]
    text = "unset CUDA_VISIBLE_DEVICES\n"
    if indices:
        # PCI bus order makes CUDA's indices the ones nvidia-smi shows.
        text += (
            "# or name the GPUs to use, numbered as nvidia-smi numbers them:\n"
            f"export CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES={','.join(indices)}\n"
        )
    return [
        Remedy(
            RemedyKind.ENV, f"let CUDA see the GPUs: fix {variable} before starting Python", text
        )
    ]


# --- no-nvidia-driver ------------------------------------------------------------------------


@dataclass(frozen=True)
class NoNvidiaDriver(Payload):
    nvml_status: str
    cuda_build: bool
    torch_cuda: str | None
    pci_devices: tuple[str, ...]
    container: str | None
    wsl: bool

    def subjects(self) -> frozenset[str]:
        return DRIVER


@check(
    "no-nvidia-driver",
    severities=(
        Severity.WARNING,
        Severity.INFO,
    ),
    family="driver",
    summary="No NVIDIA driver answers on this machine: torch can only use the CPU.",
    label="an NVIDIA driver answers",
    payload=NoNvidiaDriver,
    requires=("machine", "no-gpu-visible"),
)
def no_nvidia_driver(ctx: Context) -> Outcome:
    machine = _machine(ctx)
    nvml = machine.nvml
    if nvml is None:
        return Skip("NVML was not asked")
    if nvml.status not in DRIVER_ABSENT:
        return []
    cuda = machine.cuda_driver
    if cuda is not None and cuda.loaded and cuda.init_result == 0:
        return []  # libcuda works without NVML (rare, e.g. some WSL setups): torch can run
    cuda_build = ctx.is_cuda_build
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
            f"{ctx.torch_label} is a CUDA build, but no NVIDIA driver answers here, so "
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
            data=NoNvidiaDriver(
                nvml_status=str(nvml.status),
                cuda_build=cuda_build,
                torch_cuda=ctx.facts.torch.cuda if ctx.facts.torch is not None else None,
                pci_devices=tuple(d.address for d in machine.pci_devices),
                container=machine.container,
                wsl=machine.wsl,
            ),
        )
    ]


@remedy("no-nvidia-driver")
def _no_nvidia_driver(finding: Finding[NoNvidiaDriver], ctx: Context) -> list[Remedy]:
    data = finding.data
    if not data.cuda_build:
        return []
    if data.container:
        return [
            Remedy(
                RemedyKind.TEXT,
                "give the container the host's GPUs",
                "Start the container again through the NVIDIA Container Toolkit on the host (in "
                "Kubernetes, request nvidia.com/gpu in the pod's resources); do not install a "
                "driver inside the image.",
            ),
            start_container_with_gpus(data.container),
        ]
    if data.wsl:
        return [
            Remedy(
                RemedyKind.TEXT,
                "update the Windows NVIDIA driver",
                "Under WSL the driver is the Windows one, exposed in /usr/lib/wsl/lib. Update "
                "it on Windows, run `wsl --shutdown`, and do not install a Linux driver in WSL.",
            )
        ]
    torch_cuda = parse_cuda(data.torch_cuda)
    system = _system(ctx)
    native = native_driver(torch_cuda, system) if torch_cuda else None
    floor = mvc_floor(torch_cuda[0], system) if torch_cuda else None
    need = native or floor
    cuda_text = "{}.{}".format(*torch_cuda) if torch_cuda else "torch's CUDA"
    return [
        Remedy(
            RemedyKind.TEXT,
            "install the NVIDIA driver" + (f" {need} or newer" if need else ""),
            f"torch is built with CUDA {cuda_text}"
            + (f", which needs driver >= {need}" if need else "")
            + ". Install it from your distribution's NVIDIA packages or "
            f"{driver_download_url()}, then reboot.",
        )
    ]


# --- nvml-driver-mismatch ---------------------------------------------------------------------


@dataclass(frozen=True)
class NvmlDriverMismatch(Payload):
    library_path: str | None
    kernel_module: str | None

    def subjects(self) -> frozenset[str]:
        return DRIVER


@check(
    "nvml-driver-mismatch",
    severities=(Severity.ERROR,),
    family="driver",
    summary="The NVIDIA user-space libraries and the loaded kernel module are different versions.",
    label="the driver's libraries match its kernel module",
    payload=NvmlDriverMismatch,
    requires=("machine", "no-nvidia-driver"),
)
def nvml_driver_mismatch(ctx: Context) -> Outcome:
    machine = _machine(ctx)
    nvml = machine.nvml
    if nvml is None:
        return Skip("NVML was not asked")
    if nvml.status != NvmlStatus.RM_VERSION_MISMATCH:
        if not nvml.ok:
            return Skip(f"NVML does not answer ({nvml.error_text or nvml.status})")
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
            data=NvmlDriverMismatch(library_path=nvml.library_path, kernel_module=kernel),
        )
    ]


@remedy("nvml-driver-mismatch")
def _nvml_driver_mismatch(finding: Finding[NvmlDriverMismatch], ctx: Context) -> list[Remedy]:
    library = finding.data.library_path
    listing = f"ls -l {shlex.quote(library)}" if library else "ldconfig -p | grep libnvidia-ml.so.1"
    return [
        Remedy(
            RemedyKind.SHELL,
            "compare the loaded kernel module with the libraries, then reboot",
            f"cat /sys/module/nvidia/version\n{listing}\nsudo reboot\n",
        )
    ]


# --- cuda-init-failed -----------------------------------------------------------------------


@dataclass(frozen=True)
class CudaInitFailed(Payload):
    code: int | None
    name: str | None
    text: str | None
    library_path: str | None
    compat_paths: tuple[str, ...]
    probe_error: str | None
    libcuda_missing: bool = False
    capabilities_lack_compute: bool = False

    def subjects(self) -> frozenset[str]:
        return DRIVER


@check(
    "cuda-init-failed",
    severities=(Severity.ERROR,),
    family="driver",
    summary="cuInit, the CUDA driver's first call, fails.",
    label="the CUDA driver initialises",
    payload=CudaInitFailed,
    requires=("machine", "no-gpu-visible", "no-nvidia-driver", "nvml-driver-mismatch"),
    # The NVSwitch fabric not up (802) or device nodes taken away (999) fail cuInit.
    caused_by=("fabric-manager-not-running", "container-lost-gpus"),
)
def cuda_init_failed(ctx: Context) -> Outcome:
    machine = _machine(ctx)
    cuda = machine.cuda_driver
    if cuda is not None and not cuda.loaded and _driver_answers(machine):
        return [_libcuda_missing(ctx, machine, cuda.load_error)]
    if cuda is None or not cuda.loaded:
        return NO_DRIVER
    if cuda.init_result == 0 and cuda.probe_error is None:
        return []
    nvml = machine.nvml
    if cuda.probe_error is not None:
        what = cuda.probe_error
        evidence = [what]
    else:
        what = f"cuInit(0) returned {cuda.init_result} {cuda.error_name or ''}".rstrip()
        evidence = [f"{what}: {cuda.error_text or 'no error text'}"]
    if cuda.library_path:
        evidence.append(f"libcuda.so.1 loaded from {cuda.library_path}")
    ld_path = ctx.facts.environment.get("LD_LIBRARY_PATH", "")
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
                "torch.cuda.is_available() is False. " + cuinit_meaning(cuda.init_result)
            ),
            evidence=tuple(evidence),
            data=CudaInitFailed(
                code=cuda.init_result,
                name=cuda.error_name,
                text=cuda.error_text,
                library_path=cuda.library_path,
                compat_paths=tuple(compat),
                probe_error=cuda.probe_error,
            ),
        )
    ]


def _libcuda_missing(
    ctx: Context, machine: MachineFacts, load_error: str | None
) -> Finding[CudaInitFailed]:
    """NVML answers but the CUDA driver library is absent: half a driver."""
    evidence = [f"libcuda.so.1 cannot be loaded: {load_error or 'unknown reason'}"]
    if machine.nvml is not None and machine.nvml.driver_version:
        evidence.append(f"NVML answers: driver {machine.nvml.driver_version}")
    capabilities = ctx.facts.environment.get("NVIDIA_DRIVER_CAPABILITIES")
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
        data=CudaInitFailed(
            code=None,
            name=None,
            text=load_error,
            library_path=None,
            compat_paths=(),
            probe_error=None,
            libcuda_missing=True,
            capabilities_lack_compute=lacks_compute,
        ),
    )


@remedy("cuda-init-failed")
def _cuda_init_failed(finding: Finding[CudaInitFailed], ctx: Context) -> list[Remedy]:
    data = finding.data
    remedies: list[Remedy] = []
    compat = list(data.compat_paths)
    if compat:
        kept = [
            p
            for p in ctx.facts.environment.get("LD_LIBRARY_PATH", "").split(":")
            if p and p not in compat
        ]
        remedies.append(
            Remedy(
                RemedyKind.ENV,
                "take the cuda-compat directory out of LD_LIBRARY_PATH",
                f"export LD_LIBRARY_PATH={shlex.quote(':'.join(kept))}\n"
                if kept
                else "unset LD_LIBRARY_PATH\n",
            )
        )
    if data.libcuda_missing:
        if data.capabilities_lack_compute:
            remedies.append(
                Remedy(
                    RemedyKind.ENV,
                    "ask the container runtime for the CUDA driver library",
                    "export NVIDIA_DRIVER_CAPABILITIES=compute,utility\n"
                    "# set it where the container is started (docker run -e ..., the image's ENV)",
                )
            )
        else:
            remedies.append(
                Remedy(
                    RemedyKind.TEXT,
                    "install the driver's CUDA library",
                    "Install the compute part of the NVIDIA driver (e.g. the libnvidia-compute "
                    "package of the same version as the driver) and run `sudo ldconfig`.",
                )
            )
    elif data.code == 803:
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "reboot so the kernel module matches the upgraded driver libraries",
                "cat /sys/module/nvidia/version\nsudo reboot\n",
            )
        )
    elif data.code == 999:
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "reload the nvidia_uvm module (or reboot)",
                "sudo rmmod nvidia_uvm && sudo modprobe nvidia_uvm\n",
            )
        )
    elif not remedies:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "check the driver installation",
                f"cuInit failed with {data.name or data.probe_error}: "
                f"{data.text or ''}. Reinstall the driver matching the kernel module, "
                "then reboot.",
            )
        )
    return remedies


# --- visible-devices-truncated ------------------------------------------------------------------


@dataclass(frozen=True)
class VisibleDevicesTruncated(Payload):
    variable: str
    value: str
    stop: str
    visible: tuple[int, ...]
    ignored: tuple[str, ...]
    hidden_gpus: tuple[int, ...]
    suggested: str


@check(
    "visible-devices-truncated",
    severities=(Severity.WARNING,),
    family="driver",
    summary="CUDA_VISIBLE_DEVICES names devices CUDA never exposes: it stops at the first "
    "entry that names no GPU.",
    label="CUDA_VISIBLE_DEVICES names only GPUs that are here",
    payload=VisibleDevicesTruncated,
    requires=("machine", "gpu", "no-gpu-visible"),
)
def visible_devices_truncated(ctx: Context) -> Outcome:
    machine = _machine(ctx)
    cvd = machine.cuda_visible_devices
    gpus = machine.gpus
    if cvd is None:
        return Skip("not set")
    visible = ctx.visible_gpus
    if len(visible) == len(cvd.entries):
        return []
    stop = cvd.entries[len(visible)]
    ignored = cvd.entries[len(visible) + 1 :]
    hidden = [
        (entry, gpu)
        for entry in ignored
        if (gpu := named_gpu(entry, gpus)) is not None and gpu not in visible
    ]
    keep = [e.text for e in cvd.entries if named_gpu(e, gpus) is not None]
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
            data=VisibleDevicesTruncated(
                variable=cvd.variable,
                value=cvd.value,
                stop=stop.text,
                visible=tuple(g.index for g in visible),
                ignored=tuple(e.text for e in ignored),
                hidden_gpus=tuple(g.index for _, g in hidden),
                suggested=",".join(dict.fromkeys(keep)),
            ),
        )
    ]


@remedy("visible-devices-truncated")
def _visible_devices_truncated(
    finding: Finding[VisibleDevicesTruncated], ctx: Context
) -> list[Remedy]:
    suggested = finding.data.suggested
    if not suggested:
        return []
    return [
        Remedy(
            RemedyKind.ENV,
            "name only GPUs that are here (CUDA stops at the first entry that is not)",
            f"export CUDA_VISIBLE_DEVICES={shlex.quote(suggested)}",
        )
    ]


# --- driver-too-old --------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverTooOld(Payload):
    driver_version: str | None
    driver_cuda: int
    torch_cuda: str
    native_driver: str | None
    mvc_floor: str | None
    blocking: bool  # CUDA cannot start at all (not just minor-version compatibility)

    def subjects(self) -> frozenset[str]:
        return DRIVER


@check(
    "driver-too-old",
    severities=(
        Severity.ERROR,
        Severity.WARNING,
    ),
    family="driver",
    summary="The driver supports an older CUDA than the one torch was built with.",
    label="the driver supports torch's CUDA",
    payload=DriverTooOld,
    requires=("machine", "torch-cuda-version", "no-nvidia-driver", "nvml-driver-mismatch"),
)
def driver_too_old(ctx: Context) -> Outcome:
    machine = _machine(ctx)
    build = ctx.facts.torch
    assert build is not None
    torch_cuda = parse_cuda(build.cuda)
    driver_cuda = machine.driver_cuda_version
    if torch_cuda is None or not driver_cuda:
        return NO_DRIVER
    supported = cuda_int(driver_cuda)
    if supported >= torch_cuda:
        return []
    system = _system(ctx)
    driver = machine.driver_version
    native = native_driver(torch_cuda, system)
    floor = mvc_floor(torch_cuda[0], system)
    torch_text = "{}.{}".format(*torch_cuda)
    evidence = [
        f"driver {driver or 'unknown'} supports CUDA {cuda_int_text(driver_cuda)} "
        f"(nvmlSystemGetCudaDriverVersion_v2 = {driver_cuda})",
        f"{ctx.torch_label} is built with CUDA {torch_text}",
    ]
    if native:
        evidence.append(f"CUDA {torch_text} natively needs driver >= {native} on {system}")
    below_floor = floor is not None and driver is not None and not driver_at_least(driver, floor)
    blocking = supported[0] < torch_cuda[0] or below_floor
    data = DriverTooOld(driver, driver_cuda, torch_text, native, floor, blocking=blocking)
    if blocking:
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
                data=data,
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
            data=data,
        )
    ]


@remedy("driver-too-old")
def _driver_too_old(finding: Finding[DriverTooOld], ctx: Context) -> list[Remedy]:
    data = finding.data
    wanted = data.native_driver or data.mvc_floor
    remedies: list[Remedy] = []
    if wanted:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                f"upgrade the NVIDIA driver to {wanted} or newer",
                f"CUDA {data.torch_cuda} natively needs driver >= {data.native_driver or 'unknown'}"
                + (
                    f"; {data.mvc_floor} is the minor-version-compatibility floor"
                    if data.mvc_floor
                    else ""
                )
                + ". In a container, the host's driver is the one that counts. "
                "Reboot after the upgrade.",
            )
        )
    choice = choose_variant(ctx)
    current = ctx.facts.torch.local_tag if ctx.facts.torch is not None else None
    if choice is not None and choice.build.variant != current:
        why = driver_runs_text(ctx, choice) or (
            f"CUDA {choice.build.cuda} is within what this driver supports "
            f"(CUDA {cuda_int_text(data.driver_cuda)})"
        )
        remedies.extend(variant_remedies(ctx, choice, why))
    return remedies


# --- gpu-arch-unsupported -------------------------------------------------------------------


@dataclass(frozen=True)
class UnsupportedGpu:
    index: int
    name: str
    sm: str | None
    capability: str | None


@dataclass(frozen=True)
class GpuArchUnsupported(Payload):
    gpus: tuple[UnsupportedGpu, ...]
    archs: tuple[str, ...]
    ptx: tuple[str, ...]
    arch_source: str
    too_old: bool

    def subjects(self) -> frozenset[str]:
        # By architecture: what a GPU kernel failing with "no kernel image" names.
        return frozenset(g.sm for g in self.gpus if g.sm)


@check(
    "gpu-arch-unsupported",
    severities=(Severity.ERROR,),
    family="driver",
    summary="A GPU has neither a matching cubin nor usable PTX in this torch build.",
    label="torch carries code for every GPU",
    payload=GpuArchUnsupported,
    requires=("machine", "cuda-build", "gpu"),
)
def gpu_arch_unsupported(ctx: Context) -> Outcome:
    machine = _machine(ctx)
    archs = machine.torch_archs
    if archs is None or archs.source == "unknown":
        notes = "; ".join(archs.notes) if archs is not None else ""
        return Skip("the GPU code in this torch build is unknown" + (f": {notes}" if notes else ""))
    targets = build_targets(archs)
    unsupported = [c.gpu for c in ctx.coverage if c.covered is False]
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
            title=f"{first.name} ({first.sm}) has no kernels in {ctx.torch_label}"
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
            data=GpuArchUnsupported(
                gpus=tuple(UnsupportedGpu(g.index, g.name, g.sm, g.cc_text) for g in unsupported),
                archs=tuple(archs.sm),
                ptx=tuple(archs.ptx),
                arch_source=archs.source,
                too_old=too_old,
            ),
        )
    ]


@remedy("gpu-arch-unsupported")
def _gpu_arch_unsupported(finding: Finding[GpuArchUnsupported], ctx: Context) -> Sequence[Remedy]:
    choice = choose_variant(ctx)
    if choice is None:
        gpus = ", ".join(f"{g.name} ({g.sm})" for g in finding.data.gpus)
        return [
            Remedy(
                RemedyKind.TEXT,
                "no published torch build carries code for this GPU",
                f"No CUDA variant in torch-doctor's table (torch 2.4 and later) has kernels for "
                f"{gpus}. Use an older torch release whose arch list includes it, or build "
                "torch from source with TORCH_CUDA_ARCH_LIST naming its compute capability.",
            )
        ]
    return variant_remedies(ctx, choice, f"it carries code for {capabilities_text(ctx)}")


# --- mig-enabled ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigGpu:
    index: int
    name: str
    uuid: str | None


@dataclass(frozen=True)
class MigEnabled(Payload):
    gpus: tuple[MigGpu, ...]


@check(
    "mig-enabled",
    severities=(Severity.INFO,),
    family="driver",
    summary="A GPU is in MIG mode: CUDA sees its MIG instances, one per process.",
    label="no GPU is in MIG mode",
    payload=MigEnabled,
    requires=("machine", "driver"),
)
def mig_enabled(ctx: Context) -> Outcome:
    migs = [g for g in _machine(ctx).gpus if g.mig_enabled]
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
            data=MigEnabled(gpus=tuple(MigGpu(g.index, g.name, g.uuid) for g in migs)),
        )
    ]


@remedy("mig-enabled")
def _mig_enabled(finding: Finding[MigEnabled], ctx: Context) -> list[Remedy]:
    return [
        Remedy(
            RemedyKind.SHELL,
            "run one process per MIG instance, named by its MIG UUID",
            "nvidia-smi -L    # lists the MIG devices and their MIG-... UUIDs\n"
            "export CUDA_VISIBLE_DEVICES=MIG-<uuid from the list>\n",
        )
    ]
