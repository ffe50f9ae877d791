"""Machine facts: NVML and cuInit (one contained process), device nodes, visibility
variables, container/WSL hints, NVIDIA PCI functions, and the GPU code torch carries.

Filesystem reads take a ``root`` so unit tests can hand in a fake /dev, /sys and /proc.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from doctor.facts.environment import TorchBuildFacts
from doctor.facts.machine import (
    ArchListFacts,
    MachineFacts,
    PciDeviceFacts,
    VisibleDevicesFacts,
    VisibleEntry,
)
from doctor.probe.driver import DriverProbe
from doctor.probe.fatbin import FatbinError, read_fatbin_summary

__all__ = [
    "MachineProbe",
    "detect_container",
    "detect_wsl",
    "nvidia_pci_devices",
    "parse_visible_devices",
    "probe_machine",
    "torch_arch_list",
]

NVIDIA_VENDOR = "0x10de"
# Libraries holding torch's CUDA kernels, in the order they are tried (older releases
# split libtorch_cuda.so into _cu and _cpp).
KERNEL_LIBRARIES = ("libtorch_cuda.so", "libtorch_cuda_cu.so")


class MachineProbe:
    """The machine probes, started early so they overlap with the interpreter probe.

    NVML and cuInit run in a contained Python process (``driver``, when the caller
    started it already), and pyelftools takes a while to import; none of them needs the
    interpreter probe's results, so they start first and ``finish`` collects them once
    torch's location is known.
    """

    def __init__(
        self,
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        root: Path = Path("/"),
        driver: DriverProbe | None = None,
    ) -> None:
        self._environ = dict(os.environ if env is None else env)
        self._root = root
        self._driver = driver if driver is not None else DriverProbe(timeout, self._environ)
        self._pool = ThreadPoolExecutor(max_workers=2)
        self._pool.submit(_import_elftools)
        self._archs: Future[ArchListFacts | None] | None = None
        self._pci: tuple[PciDeviceFacts, ...] | None = None

    def torch_found(self, torch: TorchBuildFacts | None) -> None:
        """Start reading torch's fat binary headers (in a thread) while other probes run."""
        self._archs = self._pool.submit(self._arch_list, torch)

    def _arch_list(self, torch: TorchBuildFacts | None) -> ArchListFacts | None:
        """The build's GPU code, read from its fat binaries when there is a GPU to compare.

        Only a GPU makes them matter (gpu-arch-unsupported compares the two). A GPU host
        shows NVIDIA functions on the PCI bus, and then they are read at once; otherwise
        the driver's answer decides (WSL and some VMs show no PCI function), and without
        any GPU the build's documented list from the knowledge table stands in.
        """
        if torch is None or not torch.is_cuda_build:
            return None
        if not self._pci_devices():
            nvml, cuda_driver = self._driver.finish()  # the child has its own time limit
            if not nvml.gpus and not cuda_driver.device_count:
                note = "not read from torch's fat binaries: no GPU to compare them with"
                return _arch_list_from_table(torch, (note,))
        return torch_arch_list(torch)

    def _pci_devices(self) -> tuple[PciDeviceFacts, ...]:
        if self._pci is None:
            self._pci = nvidia_pci_devices(self._root)
        return self._pci

    def finish(self, torch: TorchBuildFacts | None) -> MachineFacts:
        try:
            root, environ = self._root, self._environ
            # First: the thread may collect the driver's answer, which is kept.
            archs = self._archs.result() if self._archs is not None else self._arch_list(torch)
            nvml, cuda_driver = self._driver.finish()
            cvd = environ.get("CUDA_VISIBLE_DEVICES")
            nvd = environ.get("NVIDIA_VISIBLE_DEVICES")
            return MachineFacts(
                nvml=nvml,
                cuda_driver=cuda_driver,
                device_nodes=_device_nodes(root),
                kernel_module_version=_read_first_line(root / "sys/module/nvidia/version"),
                proc_driver_version=_proc_driver_version(root),
                cuda_visible_devices=None
                if cvd is None
                else parse_visible_devices("CUDA_VISIBLE_DEVICES", cvd),
                nvidia_visible_devices=None
                if nvd is None
                else parse_visible_devices("NVIDIA_VISIBLE_DEVICES", nvd),
                container=detect_container(root, environ),
                wsl=detect_wsl(root),
                pci_devices=self._pci_devices(),
                torch_archs=archs,
            )
        finally:
            self._driver.kill()  # only when finish itself failed: it was collected above
            self._pool.shutdown(wait=True)


def _import_elftools() -> None:
    # Warms the import for read_fatbin_summary, which reports an import failure itself.
    with contextlib.suppress(ImportError, SyntaxError):
        import elftools.common.utils
        import elftools.elf.structs  # noqa: F401


def probe_machine(
    torch: TorchBuildFacts | None,
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    root: Path = Path("/"),
) -> MachineFacts:
    return MachineProbe(timeout=timeout, env=env, root=root).finish(torch)


def _read_first_line(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            line = handle.readline().strip()
    except OSError:
        return None
    return line or None


def _proc_driver_version(root: Path) -> str | None:
    # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Thu Sep 25 ..."
    line = _read_first_line(root / "proc/driver/nvidia/version")
    if line is None:
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", line)
    return match.group(1) if match else line


def _device_nodes(root: Path) -> tuple[str, ...]:
    dev = root / "dev"
    try:
        names = sorted(n for n in os.listdir(dev) if n.startswith("nvidia") or n == "dxg")
    except OSError:
        return ()
    return tuple(f"/dev/{n}" for n in names)


def parse_visible_devices(variable: str, value: str) -> VisibleDevicesFacts:
    """Parse a visibility variable the way CUDA (or the container runtime) reads it."""
    text = value.strip()
    if variable == "NVIDIA_VISIBLE_DEVICES" and text.lower() in ("all", "none", "void", ""):
        kind = "all" if text.lower() == "all" else "none"
        entry = VisibleEntry(text, kind)
        hides = kind == "none"
        return VisibleDevicesFacts(
            variable,
            value,
            (entry,),
            () if hides else (entry,),
            hides_all=hides,
            reason=f"{variable}={value!r} asks the container runtime for no GPU" if hides else None,
        )
    if text == "":
        return VisibleDevicesFacts(
            variable,
            value,
            (),
            (),
            hides_all=True,
            reason=f"{variable} is set to the empty string: CUDA sees no device",
        )
    entries = tuple(_visible_entry(part.strip()) for part in text.split(","))
    honoured: list[VisibleEntry] = []
    for entry in entries:
        if entry.kind == "invalid":
            break  # CUDA stops at the first entry that names no device
        honoured.append(entry)
    reason = None
    if not honoured:
        reason = (
            f"{variable}={value!r}: the first entry {entries[0].text!r} names no device, "
            "and CUDA stops reading there"
        )
    return VisibleDevicesFacts(
        variable, value, entries, tuple(honoured), hides_all=not honoured, reason=reason
    )


def _visible_entry(text: str) -> VisibleEntry:
    if re.fullmatch(r"\d+", text):
        return VisibleEntry(text, "index", int(text))
    if text.startswith("GPU-"):
        return VisibleEntry(text, "gpu-uuid")
    if text.startswith("MIG-"):
        return VisibleEntry(text, "mig-uuid")
    return VisibleEntry(text, "invalid")  # "-1", "NoDevFiles", typos


def detect_container(root: Path, env: Mapping[str, str]) -> str | None:
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if (root / ".dockerenv").exists():
        return "docker"
    if (root / "run/.containerenv").exists():
        return "podman"
    try:
        cgroup = (root / "proc/1/cgroup").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cgroup = ""
    for word, name in (
        ("kubepods", "kubernetes"),
        ("docker", "docker"),
        ("containerd", "container"),
    ):
        if word in cgroup:
            return name
    return None


def detect_wsl(root: Path) -> bool:
    release = _read_first_line(root / "proc/sys/kernel/osrelease") or ""
    return "microsoft" in release.lower() or "wsl" in release.lower()


def nvidia_pci_devices(root: Path) -> tuple[PciDeviceFacts, ...]:
    """NVIDIA display/3D functions on the PCI bus, whether or not a driver answers."""
    devices_dir = root / "sys/bus/pci/devices"
    try:
        addresses = sorted(os.listdir(devices_dir))
    except OSError:
        return ()
    found = []
    for address in addresses:
        device = devices_dir / address
        if _read_first_line(device / "vendor") != NVIDIA_VENDOR:
            continue
        pci_class = _read_first_line(device / "class")
        if pci_class is not None and not pci_class.startswith("0x03"):
            continue  # the HDMI audio function of a graphics card is not a GPU
        try:
            driver: str | None = os.path.basename(os.readlink(device / "driver"))
        except OSError:
            driver = None
        found.append(
            PciDeviceFacts(
                address=address,
                device_id=_read_first_line(device / "device") or "unknown",
                pci_class=pci_class,
                driver=driver,
            )
        )
    return tuple(found)


def torch_arch_list(torch: TorchBuildFacts) -> ArchListFacts:
    """The GPU code of this build: from its fat binaries, else from the knowledge table."""
    notes: list[str] = []
    lib = Path(torch.package_dir) / "lib"
    for name in KERNEL_LIBRARIES:
        path = lib / name
        if not path.is_file():
            continue
        try:
            summary = read_fatbin_summary(path)
        except FatbinError as exc:
            notes.append(str(exc))
            continue
        # A target in most fat binaries is a build target; one in a few is a special
        # kernel (e.g. sm_100a for one attention kernel) and covers nothing else.
        majority = summary.containers / 2
        common = {t for t, n in summary.carriers.items() if n > majority}
        partial = set(summary.carriers) - common
        return ArchListFacts(
            source="fatbin",
            sm=_sorted_targets(t for t in common if t.startswith("sm_")),
            ptx=_sorted_targets(t for t in common if t.startswith("compute_")),
            partial=_sorted_targets(partial),
            libraries=(str(path),),
            fat_binaries=summary.containers,
        )
    if not notes:
        notes.append(f"no {' or '.join(KERNEL_LIBRARIES)} in {lib}")
    return _arch_list_from_table(torch, tuple(notes))


def _sorted_targets(targets: Iterable[str]) -> tuple[str, ...]:
    def key(name: str) -> tuple[int, str]:
        digits = re.search(r"\d+", name)
        return (int(digits.group()) if digits else 0, name)

    return tuple(sorted(set(targets), key=key))


def _arch_list_from_table(torch: TorchBuildFacts, notes: tuple[str, ...]) -> ArchListFacts:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    from doctor.knowledge import torch_builds

    variant = torch.local_tag
    if (variant is None or not variant.startswith("cu")) and torch.cuda:
        variant = "cu" + torch.cuda.replace(".", "")
    try:
        release = Version(Version(torch.version or "").public)
    except InvalidVersion:
        return ArchListFacts(source="unknown", notes=(*notes, f"torch version {torch.version!r}"))
    for build in torch_builds():
        if build.variant == variant and release in SpecifierSet(build.torch):
            return ArchListFacts(
                source="table",
                sm=tuple("sm_{}{}".format(*cc) for cc in build.sm),
                ptx=tuple("compute_{}{}".format(*cc) for cc in build.ptx),
                table_key=f"torch {build.torch} {build.variant}",
                table_source=build.source,
                notes=notes,
            )
    return ArchListFacts(
        source="unknown",
        notes=(*notes, f"no table entry for torch {release} {variant}"),
    )
