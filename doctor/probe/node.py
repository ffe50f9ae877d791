"""Node facts: identity, /dev/shm, cgroup limits, RAM and CPUs, the distributed
variables, network interfaces, NCCL and its net plugin, the local rank.

Cheap: file reads, psutil and one ELF header; nothing is loaded and torch is never
imported. Filesystem reads take a ``root`` so unit tests can hand in a fake /proc and
/sys; the environment is this process's (the launcher sets it for the doctor, not for
the inspected interpreter).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from doctor.facts.environment import DistributionFacts
from doctor.facts.libraries import LibrariesFacts
from doctor.facts.node import (
    CgroupFacts,
    InterfaceFacts,
    LocalRankFacts,
    NcclFacts,
    NodeFacts,
    NodeIdentity,
    SharedMemoryFacts,
)
from doctor.probe.elf import ElfDynamic, LoaderModel, expand_origin
from doctor.probe.text import clean

__all__ = [
    "LAUNCHER_IDS",
    "job_variables",
    "launcher_of",
    "node_identity",
    "probe_node",
    "read_cgroup",
    "shared_memory",
]

# The ids launchers give each process, in the order a report shows them.
LAUNCHER_IDS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "TORCHELASTIC_RUN_ID",
    "SLURM_JOB_ID",
    "SLURM_PROCID",
    "SLURM_NODEID",
    "SLURM_LOCALID",
    "SLURM_NTASKS",
    "SLURM_NNODES",
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
)
# Prefixes of the variables that steer NCCL, gloo, torch and CUDA.
JOB_VARIABLE_PREFIXES = ("NCCL_", "GLOO_", "TORCH_", "CUDA_")
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit number.
_UNLIMITED = 1 << 60


def launcher_of(environ: Mapping[str, str]) -> str | None:
    if "TORCHELASTIC_RUN_ID" in environ or ("LOCAL_RANK" in environ and "RANK" in environ):
        return "torchrun"
    if "SLURM_PROCID" in environ:
        return "slurm"
    if "OMPI_COMM_WORLD_RANK" in environ or "PMI_RANK" in environ:
        return "mpi"
    return None


def node_identity(environ: Mapping[str, str]) -> NodeIdentity:
    try:
        host = socket.gethostname()
    except OSError:
        host = ""
    ids = {name: environ[name] for name in LAUNCHER_IDS if name in environ}
    return NodeIdentity(host=host, launcher_ids=ids, launcher=launcher_of(environ))


def shared_memory(path: str = "/dev/shm") -> SharedMemoryFacts:
    try:
        stat = os.statvfs(path)
    except OSError as exc:
        return SharedMemoryFacts(path, error=exc.strerror or str(exc))
    return SharedMemoryFacts(
        path, total_bytes=stat.f_blocks * stat.f_frsize, free_bytes=stat.f_bavail * stat.f_frsize
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _first_existing(candidates: Sequence[Path]) -> str | None:
    for candidate in candidates:
        text = _read(candidate)
        if text is not None:
            return text
    return None


def read_cgroup(root: Path = Path("/")) -> CgroupFacts:
    """Memory and CPU limits of this process's cgroup (v2 unified, else v1 controllers).

    A container sees its own cgroup as the root of the mount, while /proc/self/cgroup
    may still name the host's path: the named path is tried first, then the mount root.
    """
    membership = _read(root / "proc/self/cgroup")
    if membership is None:
        return CgroupFacts()
    paths: dict[str, str] = {}
    for line in membership.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    mount = root / "sys/fs/cgroup"
    if "" in paths and (mount / "cgroup.controllers").exists():
        own = mount / paths[""].lstrip("/")
        memory = _first_existing([own / "memory.max", mount / "memory.max"])
        cpu = _first_existing([own / "cpu.max", mount / "cpu.max"])
        return CgroupFacts(2, paths[""], _bytes_limit(memory), _cpu_max(cpu))
    memory_path = paths.get("memory", "/")
    cpu_path = paths.get("cpu", paths.get("cpuacct", "/"))
    memory = _first_existing(
        [
            mount / "memory" / memory_path.lstrip("/") / "memory.limit_in_bytes",
            mount / "memory/memory.limit_in_bytes",
        ]
    )
    quota = _first_existing(
        [mount / "cpu" / cpu_path.lstrip("/") / "cpu.cfs_quota_us", mount / "cpu/cpu.cfs_quota_us"]
    )
    period = _first_existing(
        [
            mount / "cpu" / cpu_path.lstrip("/") / "cpu.cfs_period_us",
            mount / "cpu/cpu.cfs_period_us",
        ]
    )
    cpu_limit = None
    if quota and period and quota.isdigit() and period.isdigit() and int(period) > 0:
        cpu_limit = int(quota) / int(period)  # -1 (no limit) is not all digits
    return CgroupFacts(1, memory_path, _bytes_limit(memory), cpu_limit)


def _bytes_limit(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None  # "max" (v2) or unreadable
    value = int(text)
    return value if value < _UNLIMITED else None


def _cpu_max(text: str | None) -> float | None:
    # cgroup v2 cpu.max: "<quota> <period>" or "max <period>".
    parts = (text or "").split()
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[1]) > 0:
        return int(parts[0]) / int(parts[1])
    return None


def job_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """NCCL_*, GLOO_*, TORCH_*, CUDA_* variables; secret-looking values never stored.
    Names and values are cleaned (doctor/probe/text.py; values keep the inside probe's
    cap on the environment): CUDA_HOME is a path, and paths can hold escape sequences."""
    from doctor.probe.text import ENVIRONMENT_CAP, clean
    from doctor.redact import REDACTED, looks_secret

    return {
        clean(name): (REDACTED if looks_secret(name) else clean(value, ENVIRONMENT_CAP))
        for name, value in sorted(environ.items())
        if name.startswith(JOB_VARIABLE_PREFIXES)
    }


def _interfaces() -> tuple[InterfaceFacts, ...]:
    import psutil

    stats = psutil.net_if_stats()
    addresses = psutil.net_if_addrs()
    found = []
    for name in sorted(set(stats) | set(addresses)):
        addrs = tuple(
            a.address.split("%", 1)[0]
            for a in addresses.get(name, [])
            if a.family in (socket.AF_INET, socket.AF_INET6)
        )
        loopback = name == "lo" or (
            bool(addrs) and all(a.startswith("127.") or a == "::1" for a in addrs)
        )
        found.append(
            InterfaceFacts(
                name=name,
                up=bool(stats[name].isup) if name in stats else False,
                addresses=addrs,
                loopback=loopback,
                # NCCL's own choice (no NCCL_SOCKET_IFNAME) leaves out docker* and lo
                # while anything else is up (NCCL's env docs, "NCCL_SOCKET_IFNAME").
                skipped_by_default=loopback or name.startswith("docker"),
            )
        )
    return tuple(found)


def _nccl(
    environ: Mapping[str, str],
    distributions: Sequence[DistributionFacts],
    libraries: LibrariesFacts | None,
) -> NcclFacts:
    from doctor.probe.elf import LoaderModel, read_dynamic, split_search_path

    library = None
    version = None
    version_from = None
    row = libraries.library("libnccl.so.2") if libraries is not None else None
    if row is not None:
        if row.load is not None and row.load.loaded and row.load.path:
            library = row.load.path
            if row.load.version:
                version, version_from = row.load.version, "ncclGetVersion"
        elif row.resolved is not None and row.resolved.path:
            library = row.resolved.path
    if version is None:
        wheel = next(
            (d for d in distributions if d.name.startswith("nvidia-nccl") and not d.shadowed),
            None,
        )
        if wheel is not None:
            version, version_from = wheel.version, f"{wheel.display_name} wheel"
        elif library is not None:
            # A system NCCL: its real file is libnccl.so.2.<minor>.<patch>.
            name = os.path.basename(os.path.realpath(library))
            if name.startswith("libnccl.so.") and name.count(".") >= 4:
                version, version_from = name[len("libnccl.so.") :], name
    plugin_name = environ.get("NCCL_NET_PLUGIN")
    if plugin_name and not plugin_name.endswith(".so"):
        # NCCL_NET_PLUGIN=foo names libnccl-net-foo.so
        plugin_name = f"libnccl-net-{plugin_name}.so"
    plugin_name = plugin_name or "libnccl-net.so"
    # NCCL dlopens the plugin by name from libnccl.so.2: its RPATH/RUNPATH, then
    # LD_LIBRARY_PATH, the ld.so cache and the default directories, as for a NEEDED entry.
    requester = read_dynamic(library) if library else ElfDynamic(path="/")
    model = LoaderModel(ld_library_path=split_search_path(environ.get("LD_LIBRARY_PATH", "")))
    plugin = None
    if "/" in plugin_name:
        plugin = plugin_name if os.path.isfile(plugin_name) else None
    else:
        plugin = model.search(plugin_name, [requester]).path
    return NcclFacts(
        version, version_from, library, plugin_name, plugin, _plugin_candidates(model, requester)
    )


PLUGIN_PREFIX = "libnccl-net"
PLUGIN_CANDIDATES_LIMIT = 64  # files named in a report, at most


def _plugin_candidates(model: LoaderModel, requester: ElfDynamic) -> tuple[str, ...]:
    """Every libnccl-net*.so the loader path holds, in the order ld.so searches it."""
    directories: list[str] = []
    if not requester.runpath:
        directories += [expand_origin(e, requester.path) for e in requester.rpath]
    directories += list(model.ld_library_path)
    directories += [expand_origin(e, requester.path) for e in requester.runpath]
    found: dict[str, str] = {}  # real path -> the path as found
    for soname, path in sorted((model.cache or {}).items()):
        if soname.startswith(PLUGIN_PREFIX):
            directories.append(os.path.dirname(path))
    directories += list(model.defaults)
    for directory in dict.fromkeys(directories):
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(directory or ".")
                if entry.name.startswith(PLUGIN_PREFIX) and ".so" in entry.name
            )
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory or ".", name)
            if os.path.isfile(path):
                found.setdefault(os.path.realpath(path), clean(path))
            if len(found) >= PLUGIN_CANDIDATES_LIMIT:
                return tuple(found.values())
    return tuple(found.values())


def probe_node(
    *,
    environ: Mapping[str, str] | None = None,
    distributions: Sequence[DistributionFacts] = (),
    libraries: LibrariesFacts | None = None,
    root: Path = Path("/"),
) -> NodeFacts:
    """The node's facts; a step that fails is recorded in ``errors``, never raised."""
    import psutil

    env = dict(os.environ if environ is None else environ)
    errors: list[str] = []
    memory_total = memory_available = None
    try:
        memory = psutil.virtual_memory()
        memory_total, memory_available = memory.total, memory.available
    except (OSError, RuntimeError) as exc:
        errors.append(f"memory: {exc}")
    affinity = None
    with contextlib.suppress(AttributeError, OSError):  # not on every platform
        affinity = len(os.sched_getaffinity(0))
    interfaces: tuple[InterfaceFacts, ...] = ()
    try:
        interfaces = _interfaces()
    except (OSError, RuntimeError) as exc:
        errors.append(f"network interfaces: {exc}")
    nccl = None
    try:
        nccl = _nccl(env, distributions, libraries)
    except (OSError, ValueError) as exc:
        errors.append(f"nccl: {exc}")
    local_rank = None
    for variable in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = env.get(variable, "").strip()
        if value.isdigit():
            local_rank = LocalRankFacts(variable, int(value))
            break
    return NodeFacts(
        identity=node_identity(env),
        shm=shared_memory(str(root / "dev/shm")),
        cgroup=read_cgroup(root),
        memory_total_bytes=memory_total,
        memory_available_bytes=memory_available,
        cpu_count=psutil.cpu_count(logical=True),
        cpu_affinity=affinity,
        variables=job_variables(env),
        interfaces=interfaces,
        socket_ifname={
            name: env[name] for name in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME") if name in env
        },
        nccl=nccl,
        local_rank=local_rank,
        errors=tuple(errors),
    )
