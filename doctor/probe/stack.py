"""Facts about the stack around torch, each gathered only where it can matter:

- the NVSwitch fabric (nvidia-fabricmanager) on machines that show NVSwitches, GPUs with
  a fabric state, or a cuInit that answered 802;
- triton's libcuda lookup, when triton is installed and a GPU is known (it runs
  ``/sbin/ldconfig -p`` as triton does);
- torchcodec's FFmpeg libraries, when torchcodec is installed (ELF headers and the loader
  model, nothing is loaded);
- a Jetson board, on aarch64.

Filesystem reads take a ``root`` so tests can hand in a fake /etc, /dev, /proc and /run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from doctor.facts import DistributionFacts, MachineFacts, PlatformFacts, TorchBuildFacts
from doctor.probe.contained import Contained
from doctor.probe.files import read_capped
from doctor.probe.text import clean

if TYPE_CHECKING:
    from doctor.facts.stack import (
        FabricManagerFacts,
        JetsonFacts,
        StackFacts,
        TorchcodecFacts,
        TritonLibcudaFacts,
    )

__all__ = [
    "fabric_manager_facts",
    "jetson_facts",
    "probe_stack",
    "torchcodec_facts",
    "triton_libcuda_lookup",
]

CUDA_ERROR_SYSTEM_NOT_READY = 802
FABRIC_MANAGER_UNIT = "nvidia-fabricmanager.service"
FABRIC_MANAGER_BINARY = "nv-fabricmanager"
UNIT_DIRECTORIES = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
BINARY_DIRECTORIES = ("usr/bin", "usr/sbin", "bin", "sbin", "usr/local/bin")
# Where triton's libcuda search lives, newest layout first (3.x, then 2.1-2.3).
TRITON_LOOKUP_SOURCES = ("backends/nvidia/driver.py", "common/build.py", "runtime/build.py")
_VERSION = re.compile(r"(\d+\.\d+(?:\.\d+)*)")


def probe_stack(
    *,
    torch: TorchBuildFacts | None,
    distributions: Sequence[DistributionFacts],
    triton_dir: str | None,
    platform: PlatformFacts | None,
    environment: Mapping[str, str],
    machine: MachineFacts | None,
    timeout: float,
    root: Path = Path("/"),
) -> StackFacts | None:
    """None when no part applies (no NVSwitch, triton lookup, torchcodec or Jetson)."""
    linux = platform is None or platform.system == "Linux"
    if not linux:
        return None
    gpu_known = machine is not None and (
        bool(machine.gpus)
        or bool(machine.pci_devices)
        or (machine.cuda_driver is not None and machine.cuda_driver.loaded)
    )
    lookup = None
    if triton_dir is not None and torch is not None and torch.is_cuda_build and gpu_known:
        # The doctor's own environment, as the toolchain probe reads it: the facts keep
        # only the variables worth reporting, and triton reads TRITON_LIBCUDA_PATH too.
        lookup = triton_libcuda_lookup(
            triton_dir, os.environ, ldconfig=str(root / "sbin/ldconfig"), timeout=timeout
        )
    jetson = None
    if platform is not None and platform.machine == "aarch64":
        jetson = jetson_facts(root)
    fabric = fabric_manager_facts(root, machine, timeout=timeout)
    codec = torchcodec_facts(distributions, environment)
    if fabric is None and lookup is None and codec is None and jetson is None:
        return None
    from doctor.facts.stack import StackFacts

    return StackFacts(fabric_manager=fabric, triton_libcuda=lookup, torchcodec=codec, jetson=jetson)


# --- Fabric Manager ----------------------------------------------------------------------


def _nvswitch_evidence(root: Path) -> tuple[str, ...]:
    found: list[str] = []
    try:
        nodes = sorted(n for n in os.listdir(root / "dev") if n.startswith("nvidia-nvswitch"))
    except OSError:
        nodes = []
    found += [f"/dev/{n}" for n in nodes]
    try:
        switches = sorted(os.listdir(root / "proc/driver/nvidia-nvswitch/devices"))
    except OSError:
        switches = []
    found += [f"/proc/driver/nvidia-nvswitch/devices/{s}" for s in switches]
    return tuple(found)


def fabric_manager_facts(
    root: Path, machine: MachineFacts | None, *, timeout: float
) -> FabricManagerFacts | None:
    """The Fabric Manager's unit, process and version; None on machines without NVSwitches.

    Read only where the fabric can matter: NVSwitch nodes, a GPU with a fabric state, or
    cuInit's 802 ("system not yet initialized").
    """
    switches = _nvswitch_evidence(root)
    fabric_gpus = machine is not None and any(g.fabric_state for g in machine.gpus)
    not_ready = (
        machine is not None
        and machine.cuda_driver is not None
        and machine.cuda_driver.init_result == CUDA_ERROR_SYSTEM_NOT_READY
    )
    if not switches and not fabric_gpus and not not_ready:
        return None
    unit = next(
        (
            f"/{d}/{FABRIC_MANAGER_UNIT}"
            for d in UNIT_DIRECTORIES
            if (root / d / FABRIC_MANAGER_UNIT).is_file()
        ),
        None,
    )
    binary = next(
        (
            root / d / FABRIC_MANAGER_BINARY
            for d in BINARY_DIRECTORIES
            if (root / d / FABRIC_MANAGER_BINARY).is_file()
        ),
        None,
    )
    version_run = (
        Contained([str(binary), "--version"], timeout=min(timeout, 10.0))
        if binary is not None
        else None
    )
    running, evidence = _fabric_manager_running(root)
    version = source = error = None
    if version_run is not None:
        run = version_run.wait()
        match = _VERSION.search(run.stdout + run.stderr) if run.ok else None
        if match:
            version, source = match.group(1), f"{FABRIC_MANAGER_BINARY} --version"
        else:
            error = f"{FABRIC_MANAGER_BINARY} --version " + (
                run.describe_failure() if not run.ok else "printed no version"
            )
    if version is None:
        package = _dpkg_fabric_manager(root)
        if package is not None:
            version, source = package[1], f"dpkg: {package[0]}"
    from doctor.facts.stack import FabricManagerFacts

    return FabricManagerFacts(
        nvswitches=switches,
        unit_file=unit,
        running=running,
        running_evidence=evidence,
        binary="/" + str(binary.relative_to(root)) if binary is not None else None,
        version=version,
        version_source=source,
        error=error,
    )


def _fabric_manager_running(root: Path) -> tuple[bool | None, str | None]:
    """A nv-fabricmanager process, or systemd's record of the active unit.

    In a container neither is visible (the service runs on the host): None, unknown.
    """
    if (root / "run/systemd/units" / f"invocation:{FABRIC_MANAGER_UNIT}").is_symlink():
        return True, f"systemd runs {FABRIC_MANAGER_UNIT}"
    proc = root / "proc"
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            comm = (proc / pid / "comm").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if comm == FABRIC_MANAGER_BINARY:
            return True, f"process {pid} is {FABRIC_MANAGER_BINARY}"
    if (root / "run/systemd/system").is_dir():
        return False, f"systemd is running and {FABRIC_MANAGER_UNIT} is not active"
    return None, None


def _dpkg_fabric_manager(root: Path) -> tuple[str, str] | None:
    """(package, version) of an installed nvidia-fabricmanager[-NNN] Debian package."""
    try:
        status = read_capped(str(root / "var/lib/dpkg/status"), "dpkg status").decode(
            "utf-8", "replace"
        )
    except OSError:
        return None
    for paragraph in status.split("\n\n"):
        fields = dict(
            line.split(":", 1) for line in paragraph.splitlines() if ":" in line and line[0] != " "
        )
        name = fields.get("Package", "").strip()
        if not re.fullmatch(r"nvidia-fabricmanager(-\d+)?", name):
            continue
        if "installed" not in fields.get("Status", "").split():
            continue
        match = _VERSION.search(fields.get("Version", ""))
        if match:
            return name, match.group(1)
    return None


# --- triton's libcuda lookup -------------------------------------------------------------


def _triton_wants(triton_dir: str) -> tuple[str, str]:
    """(the file triton requires in a libcuda directory, the text it greps ldconfig for).

    Read from triton's own source: 3.4 and later require ``libcuda.so.1``; older releases
    require the unversioned ``libcuda.so`` (they link with ``-lcuda``).
    """
    from doctor.probe.files import UnreadableFile

    for relative in TRITON_LOOKUP_SOURCES:
        try:
            # Through files.py: a FIFO would block here for ever, /dev/zero grow without end.
            data = read_capped(os.path.join(triton_dir, relative), "Python source")
        except UnreadableFile:
            continue
        source = data.decode("utf-8", "replace")
        if "def libcuda_dirs" not in source:
            continue
        required = re.search(r"os\.path\.join\(\s*\w+\s*,\s*['\"](libcuda\.so[.\d]*)['\"]", source)
        needle = re.search(r"['\"](libcuda\.so[.\d]*)['\"]\s+in\s+line", source)
        wanted = required.group(1) if required else "libcuda.so.1"
        return wanted, needle.group(1) if needle else wanted
    return "libcuda.so.1", "libcuda.so.1"


def triton_libcuda_lookup(
    triton_dir: str,
    environ: Mapping[str, str],
    *,
    ldconfig: str = "/sbin/ldconfig",
    timeout: float = 60.0,
) -> TritonLibcudaFacts:
    """triton's ``libcuda_dirs()`` replayed without importing triton.

    ``TRITON_LIBCUDA_PATH`` wins as it is; else the lines of ``/sbin/ldconfig -p`` naming
    libcuda give the directories; when none does, the ``LD_LIBRARY_PATH`` entries holding
    the file; triton then asserts one of them holds it ("libcuda.so cannot found!").
    """
    from doctor.facts.stack import TritonLibcudaFacts

    wanted, needle = _triton_wants(triton_dir)
    variable = environ.get("TRITON_LIBCUDA_PATH")
    if variable:
        path = os.path.join(variable, wanted)
        return TritonLibcudaFacts(
            triton_dir,
            wanted,
            "TRITON_LIBCUDA_PATH",
            directories=(clean(variable),),
            found=clean(path) if os.path.exists(path) else None,
            ldconfig=ldconfig,
            variable=clean(variable),
        )
    run = Contained([ldconfig, "-p"], timeout=min(timeout, 10.0), env={"LC_ALL": "C"}).wait()
    if not run.ok:
        # triton calls it with check_output: a missing or failing ldconfig raises there.
        return TritonLibcudaFacts(
            triton_dir,
            wanted,
            "ldconfig",
            ldconfig=ldconfig,
            ldconfig_error=run.describe_failure(),
        )
    listed = tuple(
        line.split()[-1] for line in run.stdout.splitlines() if needle in line and line.split()
    )
    directories = tuple(os.path.dirname(p) for p in listed)
    source = "ldconfig"
    ld_path = environ.get("LD_LIBRARY_PATH")
    if ld_path and not directories:
        source = "LD_LIBRARY_PATH"
        directories = tuple(
            d for d in ld_path.split(":") if os.path.exists(os.path.join(d, wanted))
        )
    found = next(
        (os.path.join(d, wanted) for d in directories if os.path.exists(os.path.join(d, wanted))),
        None,
    )
    # Paths from ldconfig's output and the environment: cleaned, as every such string.
    return TritonLibcudaFacts(
        triton_dir,
        wanted,
        source if directories else "none",
        directories=tuple(clean(d) for d in directories),
        listed=tuple(clean(p) for p in listed),
        found=None if found is None else clean(found),
        ldconfig=ldconfig,
    )


# --- torchcodec's FFmpeg -----------------------------------------------------------------


def torchcodec_facts(
    distributions: Sequence[DistributionFacts], environment: Mapping[str, str]
) -> TorchcodecFacts | None:
    """Each libtorchcodec_coreN.so and whether the loader finds the FFmpeg N it needs.

    torchcodec tries its core libraries from the newest FFmpeg major down and keeps the
    first that loads; the FFmpeg libraries come from the system (or conda), never a wheel.
    """
    dist = next((d for d in distributions if d.name == "torchcodec" and not d.shadowed), None)
    if dist is None:
        return None
    from doctor.facts.stack import FfmpegLibraryFacts, TorchcodecFacts

    package_dir = os.path.join(dist.location, "torchcodec")
    try:
        names = sorted(
            n for n in os.listdir(package_dir) if re.fullmatch(r"libtorchcodec_core\d+\.so", n)
        )
    except OSError:
        names = []
    if not names:
        return TorchcodecFacts(package_dir)
    from doctor.probe.elf import LoaderModel, read_dynamic, split_search_path

    ld_path = environment.get("LD_LIBRARY_PATH")
    model = LoaderModel(ld_library_path=split_search_path(ld_path) if ld_path else ())
    libraries = []
    for name in sorted(names, key=lambda n: -int(re.sub(r"\D", "", n))):
        path = os.path.join(package_dir, name)
        major = int(re.sub(r"\D", "", name))
        dynamic = read_dynamic(path)
        if dynamic.error is not None:
            libraries.append(FfmpegLibraryFacts(path, major, error=dynamic.error))
            continue
        ffmpeg = tuple(n for n in dynamic.needed if re.match(r"lib(av|sw|postproc)", n))
        missing = tuple(n for n in ffmpeg if model.search(n, [dynamic]).path is None)
        libraries.append(FfmpegLibraryFacts(path, major, needed=ffmpeg, missing=missing))
    return TorchcodecFacts(package_dir, tuple(libraries))


# --- Jetson ------------------------------------------------------------------------------


def jetson_facts(root: Path) -> JetsonFacts | None:
    """The board's model and L4T release; None when this is not a Jetson."""
    line = None
    try:
        text = read_capped(str(root / "etc/nv_tegra_release"), "system file")
        line = text.decode("utf-8", "replace").partition("\n")[0].strip() or None
    except OSError:
        pass
    model = None
    for relative in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        try:
            raw = read_capped(str(root / relative), "system file")
            model = raw.rstrip(b"\0\n").decode("utf-8", "replace")
            break
        except OSError:
            continue
    from doctor.facts.stack import JetsonFacts

    is_jetson = line is not None or (model is not None and "jetson" in model.lower())
    if not is_jetson:
        return None
    release = None
    if line is not None:
        # "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, ..."
        match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", line)
        if match:
            release = f"{match.group(1)}.{match.group(2)}"
    return JetsonFacts(model=model, l4t_release=release, tegra_release_line=line)
