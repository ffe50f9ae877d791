"""Facts about the machine: the NVIDIA driver, its GPUs and the device environment."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ArchListFacts",
    "CudaDriverFacts",
    "DeviceNodeAccess",
    "GpuFacts",
    "MachineFacts",
    "NvmlFacts",
    "NvmlStatus",
    "P2PLink",
    "PciDeviceFacts",
    "VisibleDevicesFacts",
    "VisibleEntry",
]


class NvmlStatus:
    """What NVML said when asked to start, as one word (NVML return codes in brackets)."""

    OK = "ok"
    LIBRARY_NOT_FOUND = "library-not-found"  # libnvidia-ml.so.1 cannot be loaded (12)
    DRIVER_NOT_LOADED = "driver-not-loaded"  # the kernel module is not loaded (9)
    RM_VERSION_MISMATCH = "rm-version-mismatch"  # user-space and kernel driver differ (18)
    NO_PERMISSION = "no-permission"  # /dev/nvidia* not accessible (4)
    UNKNOWN = "unknown"  # any other NVML error (999 and the rest)
    PROBE_FAILED = "probe-failed"  # the contained probe crashed or timed out


@dataclass(frozen=True)
class GpuFacts:
    """One GPU as NVML reports it (NVML order, not CUDA order)."""

    index: int
    name: str
    compute_capability: tuple[int, int] | None = None
    memory_total_bytes: int | None = None
    mig_enabled: bool | None = None  # current MIG mode; None: not supported
    mig_pending: bool | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    errors: tuple[str, ...] = ()  # per-query failures, e.g. "memory: Not Supported"
    # NVSwitch systems (nvmlDeviceGetGpuFabricInfo[V]): "not-started", "in-progress",
    # "completed"; None where the GPU or the driver has no fabric state.
    fabric_state: str | None = None
    fabric_error: str | None = None  # the registration's error when completed with one

    @property
    def sm(self) -> str | None:
        """``sm_120`` for compute capability 12.0."""
        if self.compute_capability is None:
            return None
        major, minor = self.compute_capability
        return f"sm_{major}{minor}"

    @property
    def cc_text(self) -> str | None:
        if self.compute_capability is None:
            return None
        return "{}.{}".format(*self.compute_capability)


@dataclass(frozen=True)
class DeviceNodeAccess:
    """One /dev/nvidia* node opened for reading and writing, as CUDA opens it."""

    path: str
    error: str | None = None  # errno name, e.g. "EPERM"; None: it opened
    message: str | None = None  # the system's text for it


@dataclass(frozen=True)
class P2PLink:
    """NVML's peer-to-peer status between two GPUs (by NVML index)."""

    gpu_a: int
    gpu_b: int
    status: str  # "ok", or NVML's reason: "chipset not supported", "disabled by regkey", ...
    topology: str | None = None  # their closest common ancestor, e.g. "one PCIe switch (PIX)"


@dataclass(frozen=True)
class NvmlFacts:
    """NVML (libnvidia-ml.so.1) through nvidia-ml-py."""

    status: str  # an NvmlStatus value
    error_code: int | None = None
    error_text: str | None = None
    library_path: str | None = None  # the file the loader picked, resolved
    driver_version: str | None = None  # "580.95.05"
    cuda_driver_version: int | None = None  # 13000 = CUDA 13.0
    gpus: tuple[GpuFacts, ...] = ()
    p2p: tuple[P2PLink, ...] = ()  # nvmlDeviceGetP2PStatus (read) for each pair of GPUs
    probe_error: str | None = None  # the contained process failed: how
    # When NVML fails with device nodes present: each /dev/nvidia* node opened as CUDA does.
    device_access: tuple[DeviceNodeAccess, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == NvmlStatus.OK


@dataclass(frozen=True)
class CudaDriverFacts:
    """The CUDA driver API (libcuda.so.1) called directly: cuInit and cuDriverGetVersion."""

    loaded: bool
    load_error: str | None = None
    library_path: str | None = None
    init_result: int | None = None  # CUresult of cuInit(0); 0 is success
    error_name: str | None = None  # cuGetErrorName, e.g. CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
    error_text: str | None = None  # cuGetErrorString
    driver_version: int | None = None  # cuDriverGetVersion, e.g. 12080
    device_count: int | None = None  # cuDeviceGetCount after a successful cuInit
    probe_error: str | None = None

    @property
    def init_ok(self) -> bool:
        return self.loaded and self.init_result == 0


@dataclass(frozen=True)
class VisibleEntry:
    """One comma-separated entry of CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES."""

    text: str
    kind: str  # "index", "gpu-uuid", "mig-uuid", "all", "none", "invalid"
    index: int | None = None


@dataclass(frozen=True)
class VisibleDevicesFacts:
    """A device-visibility variable, parsed as CUDA (or the container runtime) reads it."""

    variable: str
    value: str
    entries: tuple[VisibleEntry, ...] = ()
    # Entries CUDA honours: it stops at the first invalid one ("0,-1,2" exposes only 0).
    honoured: tuple[VisibleEntry, ...] = ()
    hides_all: bool = False
    reason: str | None = None  # why it hides everything, in words


@dataclass(frozen=True)
class PciDeviceFacts:
    """An NVIDIA function on the PCI bus (vendor 0x10de), read from sysfs."""

    address: str  # 0000:01:00.0
    device_id: str  # 0x2684
    pci_class: str | None = None  # 0x030000 VGA, 0x030200 3D controller
    driver: str | None = None  # the kernel driver bound to it, e.g. nvidia, nouveau


@dataclass(frozen=True)
class ArchListFacts:
    """The GPU code this torch build carries, and where that list came from."""

    source: str  # "fatbin" (read from torch's libraries) or "table" (knowledge file)
    sm: tuple[str, ...] = ()  # cubin targets of the build, e.g. ("sm_75", ..., "sm_120")
    ptx: tuple[str, ...] = ()  # PTX targets, e.g. ("compute_120",)
    # Targets found only in a minority of the fat binaries (special kernels, not the build).
    partial: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()  # the files read (source "fatbin")
    fat_binaries: int = 0  # how many fat binary containers were walked
    table_key: str | None = None  # the knowledge entry used (source "table")
    table_source: str | None = None  # where that entry's list comes from
    notes: tuple[str, ...] = ()  # why the fatbin could not be read, if the table was used


@dataclass(frozen=True)
class MachineFacts:
    """The driver, the GPUs and how the environment exposes them."""

    nvml: NvmlFacts | None = None
    cuda_driver: CudaDriverFacts | None = None
    device_nodes: tuple[str, ...] = ()  # /dev/nvidia*, /dev/dxg
    kernel_module_version: str | None = None  # /sys/module/nvidia/version
    proc_driver_version: str | None = None  # the NVRM line of /proc/driver/nvidia/version
    cuda_visible_devices: VisibleDevicesFacts | None = None
    nvidia_visible_devices: VisibleDevicesFacts | None = None
    container: str | None = None  # "docker", "podman", "kubernetes", "container"
    wsl: bool = False
    pci_devices: tuple[PciDeviceFacts, ...] = ()
    torch_archs: ArchListFacts | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gpus(self) -> tuple[GpuFacts, ...]:
        return self.nvml.gpus if self.nvml is not None else ()

    @property
    def gpu_present(self) -> bool:
        """An NVIDIA GPU is known to be here: NVML lists one, or one is on the PCI bus."""
        return bool(self.gpus) or bool(self.pci_devices)

    @property
    def driver_cuda_version(self) -> int | None:
        """The CUDA version the driver supports (NVML first, else cuDriverGetVersion)."""
        if self.nvml is not None and self.nvml.cuda_driver_version:
            return self.nvml.cuda_driver_version
        if self.cuda_driver is not None and self.cuda_driver.driver_version:
            return self.cuda_driver.driver_version
        return None

    @property
    def driver_version(self) -> str | None:
        if self.nvml is not None and self.nvml.driver_version:
            return self.nvml.driver_version
        return self.kernel_module_version or self.proc_driver_version
