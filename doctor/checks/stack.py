"""The stack around torch (catalogue 31-35): the NVSwitch fabric, a container that lost
its GPUs, triton's libcuda lookup, torchaudio's torchcodec and FFmpeg, Jetson boards.

Checks and their remedies, one payload class per finding id. The NVSwitch fabric and the
lost device nodes are driver-level roots: cuInit's failure that they cause
(cuda-init-failed, ``caused_by``) hangs under them.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context, Workflow
from doctor.derive.expectations import applicable_requirements
from doctor.derive.gpus import fabric_unready
from doctor.facts import DistributionFacts
from doctor.facts.machine import DeviceNodeAccess, MachineFacts, NvmlStatus
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge import load, torch_builds
from doctor.remedies import conda_note, install_command, pyproject_target
from doctor.remedies.variants import family, render_index_block

__all__ = [
    "ContainerLostGpus",
    "FabricManagerNotRunning",
    "FfmpegNotFound",
    "JetsonServerWheel",
    "TorchcodecMismatch",
    "TritonLibcudaNotFound",
]

DRIVER = frozenset({"driver"})  # the subject cuda-init-failed names: these roots explain it


def _knowledge(section: str) -> dict[str, object]:
    """One section of doctor/knowledge/stack.toml."""
    table: dict[str, object] = load("stack")[section]
    return table


def _public(version: str | None) -> Version | None:
    try:
        return Version(Version(version or "").public)
    except InvalidVersion:
        return None


# --- Fabric Manager (catalogue 31) -------------------------------------------------------


@dataclass(frozen=True)
class FabricManagerNotRunning(Payload):
    driver_version: str | None
    fabric_manager_version: str | None
    running: bool | None
    unit_file: str | None
    version_mismatch: bool
    not_ready: bool

    def subjects(self) -> frozenset[str]:
        return DRIVER


def _fabric_not_ready(machine: MachineFacts) -> bool:
    """cuInit answered 802, or a GPU's NVSwitch fabric registration is not complete."""
    code = machine.cuda_driver.init_result if machine.cuda_driver is not None else None
    if code not in (None, 0) and code == _knowledge("fabric_manager")["not_ready_code"]:
        return True
    return any(fabric_unready(g) for g in machine.gpus)  # the rule derive/gpus.py holds


@check(
    "fabric-manager-not-running",
    severities=(Severity.ERROR,),
    family="stack",
    summary="An NVSwitch system's Fabric Manager is not running or not the driver's version: "
    "CUDA fails with Error 802.",
    label="the NVSwitch fabric is up (Fabric Manager)",
    payload=FabricManagerNotRunning,
    requires=("machine",),
)
def fabric_manager_not_running(ctx: Context) -> Outcome:
    facts = ctx.facts
    machine = facts.machine
    assert machine is not None  # requires=("machine",)
    manager = facts.stack.fabric_manager if facts.stack is not None else None
    driver = machine.driver_version
    mismatch = (
        manager is not None
        and manager.version is not None
        and driver is not None
        and manager.version != driver
    )
    not_ready = _fabric_not_ready(machine)
    if not not_ready and not mismatch:
        if manager is None and not any(g.fabric_state for g in machine.gpus):
            return Skip("no NVSwitch fabric here")
        return []
    evidence: list[str] = []
    cuda = machine.cuda_driver
    if cuda is not None and cuda.init_result is not None and cuda.init_result != 0:
        evidence.append(
            f"cuInit(0) returned {cuda.init_result} {cuda.error_name or ''}: "
            f"{cuda.error_text or 'no error text'}".replace("  ", " ")
        )
    for gpu in machine.gpus:
        if gpu.fabric_state is not None:
            state = gpu.fabric_state + (f" with {gpu.fabric_error}" if gpu.fabric_error else "")
            evidence.append(f"GPU {gpu.index} ({gpu.name}): NVSwitch fabric {state}")
    if manager is not None:
        if manager.nvswitches:
            evidence.append("NVSwitches: " + ", ".join(manager.nvswitches[:4]))
        if manager.running is not None:
            evidence.append(
                "Fabric Manager "
                + ("running" if manager.running else "not running")
                + (f" ({manager.running_evidence})" if manager.running_evidence else "")
            )
        if manager.unit_file:
            evidence.append(f"unit file: {manager.unit_file}")
        elif machine.container:
            evidence.append(
                f"in a container ({machine.container}): the Fabric Manager runs on the host "
                "and cannot be seen from here"
            )
        else:
            evidence.append("no nvidia-fabricmanager.service unit installed")
        if manager.version is not None:
            evidence.append(f"Fabric Manager {manager.version} ({manager.version_source})")
        elif manager.error:
            evidence.append(manager.error)
    if driver:
        evidence.append(f"driver {driver}")
    if mismatch:
        found = manager.version if manager is not None else None
        title = f"Fabric Manager {found} is not the driver's version {driver}"
    elif manager is not None and manager.running is False:
        title = "the Fabric Manager is not running: CUDA cannot start on this NVSwitch system"
    else:
        title = "the NVSwitch fabric is not up (Error 802: system not yet initialized)"
    return [
        Finding(
            id="fabric-manager-not-running",
            severity=Severity.ERROR,
            title=title,
            detail=(
                "On NVSwitch systems (HGX/DGX A100, H100, H200, B200) CUDA starts only after "
                "nvidia-fabricmanager has set up the NVLink fabric, and the service must be "
                "exactly the driver's version. Until then `nvidia-smi` lists the GPUs but torch "
                "fails with `Error 802: system not yet initialized` and "
                "torch.cuda.is_available() is False."
            ),
            evidence=tuple(evidence),
            data=FabricManagerNotRunning(
                driver_version=driver,
                fabric_manager_version=manager.version if manager else None,
                running=manager.running if manager else None,
                unit_file=manager.unit_file if manager else None,
                version_mismatch=mismatch,
                not_ready=not_ready,
            ),
        )
    ]


@remedy("fabric-manager-not-running")
def _fabric_manager(finding: Finding[FabricManagerNotRunning], ctx: Context) -> list[Remedy]:
    driver = finding.data.driver_version
    branch = driver.split(".")[0] if isinstance(driver, str) else "<driver branch>"
    exact = driver or "<driver version>"
    # NVIDIA's Debian/Ubuntu packages carry the branch in their name up to 580; from 590
    # the name has none and the version picks the branch.
    unbranched = _knowledge("fabric_manager")["unbranched_package_from"]
    assert isinstance(unbranched, int)
    package = (
        "nvidia-fabricmanager"
        if branch.isdigit() and int(branch) >= unbranched
        else f"nvidia-fabricmanager-{branch}"
    )
    return [
        Remedy(
            RemedyKind.SHELL,
            f"on the host: install the Fabric Manager of exactly driver {exact} and start it",
            "# Debian/Ubuntu (CUDA repository):\n"
            f"sudo apt-get install {package}={exact}-1\n"
            "# RHEL/Rocky: sudo dnf module install nvidia-driver:"
            f"{branch}-dkms/fm\n"
            "sudo systemctl enable --now nvidia-fabricmanager\n"
            "systemctl status nvidia-fabricmanager\n",
        ),
        Remedy(
            RemedyKind.SHELL,
            "then check the fabric: every GPU shows State: Completed and Status: Success; "
            "restart the Python process (CUDA reads the state at cuInit)",
            "nvidia-smi -q | grep -A2 Fabric\n",
        ),
    ]


# --- A container that lost its GPUs (catalogue 32) ---------------------------------------


@dataclass(frozen=True)
class ContainerLostGpus(Payload):
    refused: tuple[str, ...]
    errors: tuple[str, ...]
    nvml_code: int | None
    container: str | None

    def subjects(self) -> frozenset[str]:
        return DRIVER


def _refused_nodes(machine: MachineFacts) -> tuple[DeviceNodeAccess, ...]:
    """/dev/nvidia* nodes that exist but refuse to open (EPERM/EACCES) while NVML fails."""
    nvml = machine.nvml
    if nvml is None or nvml.ok or not nvml.device_access:
        return ()
    refused = _knowledge("containers")["refused"]
    assert isinstance(refused, list)
    return tuple(n for n in nvml.device_access if n.error in refused)


@check(
    "container-lost-gpus",
    severities=(Severity.ERROR,),
    family="stack",
    summary="The /dev/nvidia* nodes are there but refuse to open (EPERM): the container lost "
    "its GPUs.",
    label="the GPU device nodes open",
    payload=ContainerLostGpus,
    requires=("machine",),
)
def container_lost_gpus(ctx: Context) -> Outcome:
    machine = ctx.facts.machine
    assert machine is not None  # requires=("machine",)
    nvml = machine.nvml
    if nvml is None:
        return Skip("NVML was not probed")
    if nvml.ok:
        return []  # NVML answers: the device nodes open
    if nvml.status in (NvmlStatus.LIBRARY_NOT_FOUND, NvmlStatus.DRIVER_NOT_LOADED):
        return Skip("no NVIDIA driver answers")
    refused = _refused_nodes(machine)
    if not refused:
        if not nvml.device_access:
            return Skip("no /dev/nvidia* node to open")
        return []  # the nodes open: NVML fails for another reason
    evidence = [
        f"NVML: {nvml.error_text or nvml.status} (return code {nvml.error_code})",
        *(f"{n.path}: {n.error} ({n.message})" for n in refused),
    ]
    opened = [n.path for n in nvml.device_access if n.error is None]
    if opened:
        evidence.append("opened: " + ", ".join(opened))
    if machine.container:
        evidence.append(f"running in a container ({machine.container})")
    return [
        Finding(
            id="container-lost-gpus",
            severity=Severity.ERROR,
            title=(
                "the container lost its GPUs: /dev/nvidia* is there but refuses to open"
                if machine.container
                else "the GPU device nodes refuse to open"
            ),
            detail=(
                "The device nodes exist but the kernel refuses them to this process, so NVML "
                "answers `Failed to initialize NVML: Unknown Error` and torch sees no GPU. In "
                "a container that worked before, the host's systemd rewrote the container's "
                "device cgroup (typically on `systemctl daemon-reload` with the systemd cgroup "
                "driver) and the GPUs were taken away from the running container."
            ),
            evidence=tuple(evidence),
            data=ContainerLostGpus(
                refused=tuple(n.path for n in refused),
                errors=tuple(sorted({str(n.error) for n in refused})),
                nvml_code=nvml.error_code,
                container=machine.container,
            ),
        )
    ]


# A container's host name, as Docker and Podman set it unless told otherwise: its short ID.
_CONTAINER_ID = re.compile(r"^[0-9a-f]{12}$")


def _restart_container(finding: Finding[ContainerLostGpus], ctx: Context) -> Remedy:
    """Restart this container (it gets its device access back): by its ID where its host
    name is one, else the command that finds it first."""
    node = ctx.facts.node
    host = node.identity.host if node is not None else ""
    container = finding.data.container
    if container == "kubernetes" and host:
        return Remedy(
            RemedyKind.SHELL,
            "now: recreate the pod (its host name is the pod's name; add -n <namespace> when "
            "it is not in your current one; its Deployment or Job starts a new one, a pod "
            "applied by itself has to be applied again)",
            f"kubectl delete pod {shlex.quote(host)}\n",
        )
    engine = "podman" if container == "podman" else "docker"
    if _CONTAINER_ID.match(host):
        return Remedy(
            RemedyKind.SHELL,
            f"now, on the host: restart the container (its host name {host} is its ID); it "
            "gets its device access back",
            f"{engine} restart {host}\n",
        )
    return Remedy(
        RemedyKind.SHELL,
        f"now, on the host: restart the container (CONTAINER: its name or ID, as `{engine} "
        "ps` lists it); it gets its device access back",
        f"{engine} restart CONTAINER\n",
    )


@remedy("container-lost-gpus")
def _container_lost_gpus(finding: Finding[ContainerLostGpus], ctx: Context) -> list[Remedy]:
    return [
        _restart_container(finding, ctx),
        Remedy(
            RemedyKind.SHELL,
            "on the host, so the next `systemctl daemon-reload` keeps the GPUs: the /dev/char "
            "symlinks systemd needs",
            "sudo nvidia-ctk system create-dev-char-symlinks --create-all\n"
            "# keep them after reboots and driver reloads:\n"
            'echo \'ACTION=="add", DEVPATH=="/bus/pci/drivers/nvidia", '
            'RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"\' '
            "| sudo tee /lib/udev/rules.d/71-nvidia-dev-char.rules\n",
        ),
        Remedy(
            RemedyKind.SHELL,
            "or on the host: CDI devices, which systemd does not take away",
            "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml\n"
            "# then start containers with: docker run --device nvidia.com/gpu=all ...\n",
        ),
        Remedy(
            RemedyKind.SHELL,
            "or on the host: Docker's cgroupfs driver (add the line below to "
            "/etc/docker/daemon.json first)",
            '#   "exec-opts": ["native.cgroupdriver=cgroupfs"]\nsudo systemctl restart docker\n',
        ),
    ]


# --- triton's libcuda lookup (catalogue 33) ----------------------------------------------


@dataclass(frozen=True)
class TritonLibcudaNotFound(Payload):
    wanted: str
    source: str
    listed: tuple[str, ...]
    ldconfig: str
    ldconfig_error: str | None
    variable: str | None
    libcuda_dir: str | None


@check(
    "triton-libcuda-not-found",
    severities=(Severity.WARNING,),
    family="stack",
    summary="triton's own search for libcuda fails: torch.compile stops with "
    "`libcuda.so cannot found!`.",
    label="triton finds libcuda",
    payload=TritonLibcudaNotFound,
    requires=("torch", "cuda-build", "linux"),
)
def triton_libcuda_not_found(ctx: Context) -> Outcome:
    facts = ctx.facts
    lookup = facts.stack.triton_libcuda if facts.stack is not None else None
    if lookup is None:
        if facts.toolchain is None:
            return Skip("triton is not installed")
        return Skip("no GPU is known, so triton's search was not replayed")
    cuda = facts.machine.cuda_driver if facts.machine is not None else None
    if cuda is None or not cuda.loaded:
        return Skip("libcuda.so.1 itself cannot be loaded (cuda-init-failed, no-nvidia-driver)")
    if lookup.found is not None:
        return []
    evidence: list[str] = []
    if lookup.variable:
        evidence.append(
            f"TRITON_LIBCUDA_PATH={lookup.variable}: triton takes it as is, and it holds "
            f"no {lookup.wanted}"
        )
    elif lookup.ldconfig_error:
        evidence.append(
            f"{lookup.ldconfig} -p {lookup.ldconfig_error}: triton runs it and stops there"
        )
    else:
        if lookup.listed:
            evidence.append(
                f"{lookup.ldconfig} -p lists "
                + ", ".join(lookup.listed)
                + f", and none of their directories holds {lookup.wanted}"
            )
        else:
            evidence.append(f"{lookup.ldconfig} -p lists no libcuda (the ld.so cache)")
        if lookup.source == "none":
            evidence.append(f"no LD_LIBRARY_PATH entry holds {lookup.wanted}")
    evidence.append(
        f"this triton requires {lookup.wanted} in the directory it finds (read from its "
        f"source in {lookup.triton_dir})"
    )
    libcuda_dir = None
    if cuda.library_path:
        evidence.append(f"the loader itself finds libcuda.so.1 at {cuda.library_path}")
        libcuda_dir = posixpath.dirname(cuda.library_path)
    return [
        Finding(
            id="triton-libcuda-not-found",
            severity=Severity.WARNING,
            title=f"torch.compile will fail: triton cannot find {lookup.wanted}",
            detail=(
                "torch imports and runs, but torch.compile's GPU backend (triton) looks for "
                "libcuda its own way, not through the loader: `TRITON_LIBCUDA_PATH`, else the "
                "libcuda lines of `/sbin/ldconfig -p`, else LD_LIBRARY_PATH. When that search "
                "comes up empty, the first compiled function fails with `AssertionError: "
                "libcuda.so cannot found!` (or `/usr/bin/ld: cannot find -lcuda`)."
            ),
            evidence=tuple(evidence),
            data=TritonLibcudaNotFound(
                wanted=lookup.wanted,
                source=lookup.source,
                listed=lookup.listed,
                ldconfig=lookup.ldconfig,
                ldconfig_error=lookup.ldconfig_error,
                variable=lookup.variable,
                libcuda_dir=libcuda_dir,
            ),
        )
    ]


@remedy("triton-libcuda-not-found")
def _triton_libcuda(finding: Finding[TritonLibcudaNotFound], ctx: Context) -> list[Remedy]:
    wanted = finding.data.wanted
    directory = finding.data.libcuda_dir
    remedies: list[Remedy] = []
    if directory is not None and wanted == "libcuda.so.1":
        remedies.append(
            Remedy(
                RemedyKind.ENV,
                "point triton at the directory the loader takes libcuda.so.1 from",
                f"export TRITON_LIBCUDA_PATH={shlex.quote(directory)}\n",
            )
        )
    elif directory is not None:
        # This triton links with -lcuda: it needs the unversioned name beside the directory.
        link_dir = "$HOME/.cache/triton-libcuda"
        source = shlex.quote(f"{directory}/libcuda.so.1")
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                f"give triton a directory with {wanted} (a link to the driver's libcuda.so.1)",
                f'mkdir -p "{link_dir}"\n'
                f'ln -sf {source} "{link_dir}/{wanted}"\n'
                f'export TRITON_LIBCUDA_PATH="{link_dir}"\n',
            )
        )
    if finding.data.ldconfig_error is None and not finding.data.variable:
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "or refresh the loader cache triton reads (as root)",
                "sudo ldconfig\n",
            )
        )
    return remedies


# --- torchaudio, torchcodec and FFmpeg (catalogue 34) ------------------------------------


def torchcodec_torch_range(torchcodec: str) -> str | None:
    """The torch releases a torchcodec release is built for, from its compatibility table."""
    version = _public(torchcodec)
    if version is None:
        return None
    minor = f"{version.major}.{version.minor}"
    rows = _knowledge("torchcodec")["compatible"]
    assert isinstance(rows, list)
    for row in rows:
        if row["torchcodec"] == minor:
            return str(row["torch"])
    return None


def torchcodec_for_torch(torch: str) -> str | None:
    """The newest torchcodec minor the table pairs with this torch, as ``0.9.*``."""
    version = _public(torch)
    if version is None:
        return None
    rows = _knowledge("torchcodec")["compatible"]
    assert isinstance(rows, list)
    matching = [r["torchcodec"] for r in rows if version in SpecifierSet(r["torch"])]
    if not matching:
        return None
    newest = max(matching, key=lambda m: Version(m))
    return f"{newest}.*"


def _torch_pin(dist: DistributionFacts, ctx: Context) -> str | None:
    """torchcodec's own ``Requires-Dist: torch`` specifier here, when its wheel has one."""
    requirements, _ = applicable_requirements(dist.requires_dist, ctx.marker_environment)
    for requirement in requirements:
        if canonicalize_name(requirement.name) == "torch" and requirement.specifier:
            return str(requirement.specifier)
    return None


@dataclass(frozen=True)
class TorchcodecMismatch(Payload):
    torch: str
    torchcodec: str | None
    built_for: str | None
    wanted: str | None

    def subjects(self) -> frozenset[str]:
        return frozenset({"torchcodec"})


@check(
    "torchcodec-mismatch",
    severities=(Severity.ERROR, Severity.WARNING),
    family="stack",
    summary="torchaudio >= 2.9 needs torchcodec, and torchcodec must be the release built for "
    "this torch.",
    label="torchcodec is installed and built for this torch",
    payload=TorchcodecMismatch,
    requires=("torch",),
)
def torchcodec_mismatch(ctx: Context) -> Outcome:
    facts = ctx.facts
    torch = ctx.torch
    assert torch is not None  # requires=("torch",)
    torchaudio = facts.distribution("torchaudio")
    torchcodec = facts.distribution("torchcodec")
    if torchaudio is None and torchcodec is None:
        return Skip("no torchaudio or torchcodec installed")
    needs = str(_knowledge("torchcodec")["torchaudio_needs_torchcodec"])
    audio_version = _public(torchaudio.version) if torchaudio is not None else None
    wanted = torchcodec_for_torch(torch.version)
    if torchcodec is None:
        if audio_version is None or audio_version not in SpecifierSet(needs):
            return Skip(
                f"torchaudio {torchaudio.version if torchaudio else ''} does not use torchcodec"
            )
        return [
            Finding(
                id="torchcodec-mismatch",
                severity=Severity.WARNING,
                title=f"torchaudio {torchaudio.version if torchaudio else ''} needs torchcodec, "
                "which is not installed",
                detail=(
                    "From torchaudio 2.9, torchaudio.load and torchaudio.save decode and encode "
                    "through torchcodec, which torchaudio does not require on install. Without "
                    "it they fail with `ImportError: TorchCodec is required for "
                    "load_with_torchcodec`."
                ),
                evidence=(
                    f"torchaudio {torchaudio.version if torchaudio else ''} installed; torchcodec "
                    "not installed",
                    f"torch {torch.version}: torchcodec {wanted or 'release unknown'} is "
                    "built for it",
                ),
                data=TorchcodecMismatch(
                    torch=torch.version, torchcodec=None, built_for=None, wanted=wanted
                ),
            )
        ]
    pin = _torch_pin(torchcodec, ctx)
    built_for = pin or torchcodec_torch_range(torchcodec.version)
    torch_version = _public(torch.version)
    if built_for is None or torch_version is None:
        return Skip(f"torchcodec {torchcodec.version} is not in its compatibility table")
    try:
        matches = torch_version in SpecifierSet(built_for)
    except InvalidSpecifier:
        return Skip(f"torchcodec's torch requirement {built_for!r} cannot be read")
    if matches:
        return []
    source = "its Requires-Dist" if pin else "torchcodec's compatibility table"
    return [
        Finding(
            id="torchcodec-mismatch",
            severity=Severity.ERROR,
            title=f"torchcodec {torchcodec.version} is built for torch {built_for}, "
            f"not torch {torch.version}",
            detail=(
                "torchcodec's C++ core links against torch's libraries, so a torchcodec built "
                "for another torch fails to load: `RuntimeError: Could not load libtorchcodec. "
                "Likely causes: ... 2. The PyTorch version (...) is not compatible with this "
                "version of TorchCodec`. torchaudio >= 2.9 loads and saves audio through it."
            ),
            evidence=(
                f"torchcodec {torchcodec.version}: built for torch {built_for} ({source})",
                f"torch {torch.version} installed",
            ),
            data=TorchcodecMismatch(
                torch=torch.version,
                torchcodec=torchcodec.version,
                built_for=built_for,
                wanted=wanted,
            ),
        )
    ]


def _libavutil_for(ffmpeg_major: int | None) -> str | None:
    """libavutil's soname for an FFmpeg major (FFmpeg 7 -> libavutil.so.59)."""
    majors = _knowledge("torchcodec")["libavutil_major"]
    assert isinstance(majors, dict)
    found = majors.get(str(ffmpeg_major))
    return f"libavutil.so.{found}" if found is not None else None


@dataclass(frozen=True)
class FfmpegNotFound(Payload):
    ffmpeg_majors: tuple[int, ...]
    missing: tuple[str, ...]


@check(
    "ffmpeg-not-found",
    severities=(Severity.ERROR,),
    family="stack",
    summary="torchcodec is installed but the loader finds no FFmpeg of a major it supports.",
    label="the loader finds an FFmpeg torchcodec supports",
    payload=FfmpegNotFound,
)
def ffmpeg_not_found(ctx: Context) -> Outcome:
    facts = ctx.facts
    codec = facts.stack.torchcodec if facts.stack is not None else None
    if codec is None:
        return Skip("torchcodec is not installed")
    if not codec.libraries:
        return Skip("torchcodec ships no libtorchcodec_core*.so here")
    if codec.loadable:
        return []
    majors = sorted(lib.ffmpeg_major for lib in codec.libraries if lib.ffmpeg_major is not None)
    evidence = []
    for lib in codec.libraries:
        name = lib.library.rsplit("/", 1)[-1]
        if lib.error:
            soname = _libavutil_for(lib.ffmpeg_major)
            wants = f" (FFmpeg {lib.ffmpeg_major}: {soname})" if soname else ""
            evidence.append(f"{name}{wants}: {lib.error}")
        else:
            evidence.append(
                f"{name} (FFmpeg {lib.ffmpeg_major}) needs {', '.join(lib.missing)}: "
                "not found by the loader"
            )
    return [
        Finding(
            id="ffmpeg-not-found",
            severity=Severity.ERROR,
            title="no FFmpeg for torchcodec: "
            + ", ".join(f"FFmpeg {m}" for m in majors)
            + " not found by the loader",
            detail=(
                "torchcodec does not ship FFmpeg: it loads one of its core libraries, one per "
                "FFmpeg major, and each needs that major's shared libraries (libavutil.so.N, "
                "libavcodec, libavformat...) from the system or conda. When none resolves, "
                "`import torchcodec` (and torchaudio.load/save from 2.9) fails with "
                "`RuntimeError: Could not load libtorchcodec. Likely causes: 1. FFmpeg is not "
                "properly installed in your environment`."
            ),
            evidence=tuple(evidence),
            data=FfmpegNotFound(
                ffmpeg_majors=tuple(majors),
                missing=tuple(sorted({m for lib in codec.libraries for m in lib.missing})),
            ),
        )
    ]


def _install(ctx: Context, spec: str) -> str:
    if ctx.workflow is Workflow.UV_PROJECT:
        return f"uv add {shlex.quote(spec)}"
    return install_command(ctx, [spec])


@remedy("torchcodec-mismatch")
def _torchcodec(finding: Finding[TorchcodecMismatch], ctx: Context) -> list[Remedy]:
    wanted = finding.data.wanted
    if wanted is None:
        return [
            Remedy(
                RemedyKind.TEXT,
                "install the torchcodec built for this torch",
                f"See torchcodec's compatibility table: {_knowledge('torchcodec')['install_docs']}",
            )
        ]
    return [
        Remedy(
            RemedyKind.SHELL,
            f"install the torchcodec built for torch {finding.data.torch}",
            _install(ctx, f"torchcodec=={wanted}") + "\n",
        ),
        *conda_note(ctx),
    ]


@remedy("ffmpeg-not-found")
def _ffmpeg(finding: Finding[FfmpegNotFound], ctx: Context) -> list[Remedy]:
    majors = finding.data.ffmpeg_majors
    newest = max(majors) if majors else 7
    return [
        Remedy(
            RemedyKind.SHELL,
            "install FFmpeg's shared libraries (any of the majors listed)",
            "# Debian/Ubuntu:\nsudo apt-get install ffmpeg\n"
            "# Fedora/RHEL (RPM Fusion): sudo dnf install ffmpeg-libs\n"
            f'# conda environments: conda install -c conda-forge "ffmpeg<{newest + 1}"\n',
        ),
        Remedy(
            RemedyKind.TEXT,
            "FFmpeg installed somewhere else",
            "Add the directory holding its libavutil.so.N to LD_LIBRARY_PATH before starting "
            "Python; torchcodec finds it through the loader, not through PATH.",
        ),
    ]


# --- Jetson (catalogue 35) ---------------------------------------------------------------


def jetson_release(l4t_major: int | None) -> dict[str, object] | None:
    """The knowledge row for an L4T major (32, 35, 36, 38)."""
    if l4t_major is None:
        return None
    rows = _knowledge("jetson")["releases"]
    assert isinstance(rows, list)
    for row in rows:
        if row["l4t"] == l4t_major:
            return dict(row)
    return None


def _jetson_build(dist: DistributionFacts) -> bool:
    """Built for Jetson: NVIDIA's ``+nvXX.YY`` local versions or a plain linux_aarch64 tag
    (Jetson AI Lab); the server builds on PyPI and download.pytorch.org are manylinux."""
    local = dist.version.split("+", 1)[1] if "+" in dist.version else ""
    if "nv" in local:
        return True
    return any(t.endswith("linux_aarch64") and "manylinux" not in t for t in dist.wheel_tags)


@dataclass(frozen=True)
class JetsonServerWheel(Payload):
    board: str
    l4t: str | None
    jetpack: str
    capability: str
    index: str
    sbsa_ok: bool
    torch: str
    cuda_build: bool

    def subjects(self) -> frozenset[str]:
        return frozenset({"torch"})


@check(
    "jetson-server-wheel",
    severities=(Severity.ERROR,),
    family="stack",
    summary="A Jetson runs a server-ARM (SBSA) or CPU build of torch: its GPU stays unused.",
    label="torch is built for this Jetson",
    payload=JetsonServerWheel,
    requires=("torch",),
)
def jetson_server_wheel(ctx: Context) -> Outcome:
    facts = ctx.facts
    jetson = facts.stack.jetson if facts.stack is not None else None
    if jetson is None:
        return Skip("not a Jetson")
    dist = ctx.torch
    if dist is None or facts.torch is None:
        return Skip("torch's build is unknown")
    release = jetson_release(jetson.l4t_major)
    if release is None:
        return Skip(f"L4T {jetson.l4t_release or 'release unknown'} is not in the knowledge table")
    board = jetson.model or str(release["boards"])
    cuda_build = facts.torch.is_cuda_build
    problem: str | None = None
    if release["sbsa"]:
        minimum = str(release.get("min_cuda", "13.0"))
        if not cuda_build:
            problem = "a CPU-only build"
        elif (_public(facts.torch.cuda) or Version("0")) < Version(minimum):
            problem = (
                f"a CUDA {facts.torch.cuda} build: compute capability {release['capability']} "
                f"(sm_110) needs CUDA {minimum} builds"
            )
    elif _jetson_build(dist):
        return []
    elif cuda_build:
        problem = (
            f"a server-ARM (SBSA) CUDA {facts.torch.cuda} build: its CUDA libraries expect a "
            "discrete-GPU driver, not the Jetson's integrated GPU"
        )
    else:
        problem = "a CPU-only build"
    if problem is None:
        return []
    tags = ", ".join(dist.wheel_tags) or "no WHEEL tag"
    # NVML answers on Thor; on Orin and older the knowledge row stands in.
    gpus = facts.machine.gpus if facts.machine is not None else ()
    capability = next((g.cc_text for g in gpus if g.cc_text), None) or str(release["capability"])
    rule = load("gpu_architectures").get("integrated", {}).get(capability)
    evidence = [
        f"Jetson: {board}; L4T {jetson.l4t_release or '?'} (JetPack {release['jetpack']}), "
        f"GPU compute capability {capability}",
        f"torch {dist.version}: {problem} (wheel tags: {tags})",
    ]
    if rule:
        evidence.append(f"compute capability {capability}: {rule}")
    return [
        Finding(
            id="jetson-server-wheel",
            severity=Severity.ERROR,
            title=f"torch {dist.version} on {board} is {problem.split(':')[0]}",
            detail=(
                "The aarch64 torch wheels on PyPI and download.pytorch.org are built for "
                "server ARM (SBSA) machines with discrete GPUs. On a Jetson before Thor they "
                "run on the CPU only (torch.cuda.is_available() is False) or fail with symbol "
                "errors; Jetson builds come from NVIDIA's and Jetson AI Lab's indexes for the "
                "board's JetPack. Jetson Thor (JetPack 7) runs the SBSA builds, from CUDA 13.0."
            ),
            evidence=tuple(evidence),
            data=JetsonServerWheel(
                board=board,
                l4t=jetson.l4t_release,
                jetpack=str(release["jetpack"]),
                capability=capability,
                index=str(release["index"]),
                sbsa_ok=bool(release["sbsa"]),
                torch=dist.version,
                cuda_build=cuda_build,
            ),
        )
    ]


def _sbsa_torch(finding: Finding[JetsonServerWheel], ctx: Context) -> str | None:
    """On a board that runs the server-ARM builds (Thor): torch at the installed release,
    in the variant of the board's index, when that variant has the release."""
    variant = finding.data.index.rstrip("/").rsplit("/", 1)[-1]
    release = _public(ctx.torch_version)
    if release is None:
        return None
    for build in torch_builds():
        if build.variant == variant and release in SpecifierSet(build.torch):
            return f"torch=={release}+{variant}"
    return None


@remedy("jetson-server-wheel")
def _jetson(finding: Finding[JetsonServerWheel], ctx: Context) -> list[Remedy]:
    index = finding.data.index
    jetpack = finding.data.jetpack
    packages = family(ctx)
    target = pyproject_target(ctx)
    if target is not None:
        marker = "sys_platform == 'linux' and platform_machine == 'aarch64'"
        upgrade = " ".join(f"--upgrade-package {shlex.quote(p)}" for p in packages)
        return [
            Remedy(
                RemedyKind.TOML,
                f"take {', '.join(packages)} from the builds for JetPack {jetpack}: run "
                "`torch-doctor fix`, or add this block to pyproject.toml",
                render_index_block(f"jetpack-{jetpack}", index, packages, marker),
                target=target,
            ),
            Remedy(
                RemedyKind.SHELL,
                "then re-lock and sync so uv installs the Jetson build (a torch pin in "
                "[project] dependencies must name a release that index has)",
                f"uv lock {upgrade}\nuv sync --reinstall-package torch\n",
            ),
        ]
    pinned = _sbsa_torch(finding, ctx) if finding.data.sbsa_ok else None
    if pinned is not None:
        summary = f"reinstall torch from the builds for JetPack {jetpack}"
        specs = [pinned, *(p for p in packages if p != "torch")]
    else:
        # Said plainly: these indexes carry their own set of releases per JetPack.
        summary = (
            f"reinstall {', '.join(packages)} from the builds for JetPack {jetpack}; not pinned: "
            "that index carries its own torch releases for each JetPack, which torch-doctor "
            "does not track (pin the version it installs afterwards)"
        )
        specs = packages
    return [
        Remedy(
            RemedyKind.SHELL,
            summary,
            install_command(ctx, specs, reinstall=True, index_url=index) + "\n",
        ),
        *conda_note(ctx),
    ]
