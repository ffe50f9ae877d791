"""Node facts: who this node is in a job, and what multi-GPU jobs need of it.

Cheap (no torch, no library loads) and in every report, so that ``compare`` can line
up the nodes of a cluster and the checks can flag the pitfalls of one node: a small
``/dev/shm``, a local rank with no GPU left for it. (P2P between GPUs is an NVML fact:
``NvmlFacts.p2p``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CgroupFacts",
    "InterfaceFacts",
    "LocalRankFacts",
    "NcclFacts",
    "NodeFacts",
    "NodeIdentity",
    "SharedMemoryFacts",
]


@dataclass(frozen=True)
class NodeIdentity:
    """The node's host name and the ids its launcher gave this process."""

    host: str
    # RANK, LOCAL_RANK, SLURM_PROCID, SLURM_NODEID, ... as set (only those present)
    launcher_ids: dict[str, str] = field(default_factory=dict)
    launcher: str | None = None  # "torchrun", "slurm", "mpi", or None


@dataclass(frozen=True)
class SharedMemoryFacts:
    """/dev/shm, where NCCL puts its intra-node buffers."""

    path: str
    total_bytes: int | None = None
    free_bytes: int | None = None
    error: str | None = None  # why it could not be read


@dataclass(frozen=True)
class CgroupFacts:
    """The limits the cgroup puts on this process (None: unlimited or unknown)."""

    version: int | None = None  # 1 or 2
    path: str | None = None
    memory_limit_bytes: int | None = None
    cpu_limit: float | None = None  # CPUs' worth of quota, e.g. 2.5


@dataclass(frozen=True)
class InterfaceFacts:
    """A network interface NCCL's or gloo's socket transport could pick."""

    name: str
    up: bool
    addresses: tuple[str, ...] = ()  # IPv4 and IPv6 addresses
    loopback: bool = False
    # NCCL skips these when it picks on its own (docker0, lo) unless nothing else is left
    skipped_by_default: bool = False


@dataclass(frozen=True)
class NcclFacts:
    """The NCCL torch loads and the network plugin NCCL would find."""

    version: str | None = None  # e.g. "2.29.7"
    version_from: str | None = None  # "nvidia-nccl-cu13 wheel" or the library's file name
    library: str | None = None  # the libnccl.so.2 the loader resolves for torch
    plugin_name: str = "libnccl-net.so"  # from NCCL_NET_PLUGIN when set
    plugin: str | None = None  # the file the loader would find for it (None: none)
    # Every libnccl-net*.so in the directories NCCL's dlopen searches (RPATH/RUNPATH of
    # libnccl.so.2, LD_LIBRARY_PATH, the ld.so cache, the default directories), in search
    # order: NCCL loads only `plugin_name`; another one present (an HPC-X or AWS OFI plugin
    # NCCL_NET_PLUGIN does not name) is worth saying
    plugin_candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalRankFacts:
    """The local rank the launcher set (checked against the GPUs this process can see)."""

    variable: str  # LOCAL_RANK or SLURM_LOCALID
    value: int


@dataclass(frozen=True)
class NodeFacts:
    """Everything per node that a multi-GPU or multi-node job depends on."""

    identity: NodeIdentity
    shm: SharedMemoryFacts | None = None
    cgroup: CgroupFacts | None = None
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    cpu_count: int | None = None  # logical CPUs of the machine
    cpu_affinity: int | None = None  # CPUs this process may run on
    # NCCL_*, GLOO_*, TORCH_*, CUDA_* variables; secret-looking values are redacted here
    variables: dict[str, str] = field(default_factory=dict)
    interfaces: tuple[InterfaceFacts, ...] = ()
    socket_ifname: dict[str, str] = field(default_factory=dict)  # NCCL_/GLOO_SOCKET_IFNAME
    nccl: NcclFacts | None = None
    local_rank: LocalRankFacts | None = None
    errors: tuple[str, ...] = ()  # probe steps that failed, in words
