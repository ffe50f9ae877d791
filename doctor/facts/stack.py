"""Facts about the stack around torch: the NVSwitch fabric, triton's libcuda lookup,
torchcodec's FFmpeg libraries, and Jetson boards.

Imported only when one of them applies (doctor/probe/stack.py): the default run on a
machine without them creates none of these classes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FabricManagerFacts",
    "FfmpegLibraryFacts",
    "JetsonFacts",
    "StackFacts",
    "TorchcodecFacts",
    "TritonLibcudaFacts",
]


@dataclass(frozen=True)
class FabricManagerFacts:
    """NVSwitch hardware and the nvidia-fabricmanager service that must run beside it."""

    nvswitches: tuple[str, ...] = ()  # evidence of NVSwitches: device nodes, PCI functions
    unit_file: str | None = None  # the systemd unit, when installed
    running: bool | None = None  # a nv-fabricmanager process or an active unit; None: unknown
    running_evidence: str | None = None
    binary: str | None = None  # nv-fabricmanager
    version: str | None = None  # "580.95.05"
    version_source: str | None = None  # "nv-fabricmanager --version", "dpkg: <package>"
    error: str | None = None  # why the version could not be read


@dataclass(frozen=True)
class TritonLibcudaFacts:
    """triton's own search for the directory holding libcuda (triton/backends/nvidia/driver.py)."""

    triton_dir: str
    wanted: str  # the file triton requires in that directory: libcuda.so.1 (3.4+) or libcuda.so
    source: str  # "TRITON_LIBCUDA_PATH", "ldconfig", "LD_LIBRARY_PATH" or "none"
    directories: tuple[str, ...] = ()  # where triton looks, in its order
    listed: tuple[str, ...] = ()  # the paths `ldconfig -p` lists for it
    found: str | None = None  # the file triton accepts; None: torch.compile fails
    ldconfig: str = "/sbin/ldconfig"
    ldconfig_error: str | None = None  # missing, crashed, timed out
    variable: str | None = None  # TRITON_LIBCUDA_PATH as set


@dataclass(frozen=True)
class FfmpegLibraryFacts:
    """One of torchcodec's core libraries (one per FFmpeg major) and its FFmpeg sonames."""

    library: str  # path of libtorchcodec_coreN.so
    ffmpeg_major: int | None
    needed: tuple[str, ...] = ()  # libav*/libsw* sonames it needs
    missing: tuple[str, ...] = ()  # those the loader finds nowhere
    error: str | None = None  # unreadable ELF


@dataclass(frozen=True)
class TorchcodecFacts:
    """torchcodec's core libraries and whether the loader finds the FFmpeg each needs."""

    package_dir: str
    libraries: tuple[FfmpegLibraryFacts, ...] = ()

    @property
    def loadable(self) -> tuple[FfmpegLibraryFacts, ...]:
        return tuple(lib for lib in self.libraries if lib.error is None and not lib.missing)


@dataclass(frozen=True)
class JetsonFacts:
    """An NVIDIA Jetson board (L4T), read from /etc/nv_tegra_release and the device tree."""

    model: str | None = None  # /proc/device-tree/model, e.g. "NVIDIA Jetson AGX Orin"
    l4t_release: str | None = None  # "36.4.3" from "# R36 (release), REVISION: 4.3"
    tegra_release_line: str | None = None

    @property
    def l4t_major(self) -> int | None:
        if self.l4t_release is None:
            return None
        head = self.l4t_release.split(".")[0]
        return int(head) if head.isdigit() else None


@dataclass(frozen=True)
class StackFacts:
    """What the stack probes found; None where a probe did not apply."""

    fabric_manager: FabricManagerFacts | None = None
    triton_libcuda: TritonLibcudaFacts | None = None
    torchcodec: TorchcodecFacts | None = None
    jetson: JetsonFacts | None = None
