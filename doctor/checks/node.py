"""What a multi-GPU or multi-node job needs of this node (catalogue 30, issue 13).

One node can be wrong while its neighbours are fine: a container's 64 MiB /dev/shm, a
Slurm task whose local rank points past the one GPU it was given, two GPUs that cannot
reach each other's memory. Each check judges this node only; `compare` lines the nodes up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context
from doctor.facts.machine import GpuFacts
from doctor.facts.node import NodeFacts
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge import load

__all__ = [
    "DevShmTooSmall",
    "GpuP2PUnavailable",
    "LocalRankWithoutGpu",
    "P2PPair",
    "SocketInterfaceAmbiguous",
    "job_nodes",
    "job_processes",
    "shm_minimum_bytes",
    "virtual_interface",
]

_MIB = 1024 * 1024
# Variables that give the number of processes of the job on this node, or in all.
_PROCESS_COUNTS = ("LOCAL_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS")


def shm_minimum_bytes() -> int:
    return int(load("multi_gpu")["shm"]["minimum_bytes"])


def job_processes(node: NodeFacts) -> int:
    """How many processes the launcher says the job has (1 without a launcher)."""
    counts = [
        int(value)
        for name, value in node.identity.launcher_ids.items()
        if name in _PROCESS_COUNTS and value.isdigit()
    ]
    return max(counts, default=1)


def job_nodes(node: NodeFacts) -> int:
    """How many nodes the job spans, as the launcher says (1 when it does not say)."""
    ids = node.identity.launcher_ids

    def number(name: str) -> int | None:
        value = ids.get(name, "")
        return int(value) if value.isdigit() else None

    nnodes = number("SLURM_NNODES")
    if nnodes is not None:
        return nnodes
    world, local = number("WORLD_SIZE"), number("LOCAL_WORLD_SIZE")
    if world is not None and local:
        return -(-world // local)  # ceiling
    return 1


def virtual_interface(name: str) -> bool:
    prefixes = tuple(load("multi_gpu")["interfaces"]["virtual_prefixes"])
    return name.startswith(prefixes)


def _visible(ctx: Context) -> list[GpuFacts] | None:
    """The GPUs CUDA_VISIBLE_DEVICES leaves this process; None when no GPU is known."""
    machine = ctx.facts.machine
    if machine is None or machine.nvml is None or not machine.nvml.gpus:
        return None
    return list(ctx.visible_gpus)


def _mib(value: int) -> str:
    return f"{value / _MIB:,.0f} MiB"


# --- dev-shm-too-small -------------------------------------------------------------------

# What to give /dev/shm: enough for NCCL's segments and DataLoader's batches on 8 GPUs.
_SHM_SIZE = str(load("multi_gpu")["shm"]["remedy_size"])


@dataclass(frozen=True)
class DevShmTooSmall(Payload):
    path: str
    total_bytes: int
    free_bytes: int | None
    minimum_bytes: int
    container: str | None


@check(
    "dev-shm-too-small",
    severities=(Severity.WARNING,),
    family="node",
    summary="/dev/shm is smaller than a multi-process or multi-GPU job needs (NCCL, DataLoader).",
    label="/dev/shm for NCCL and DataLoader",
    payload=DevShmTooSmall,
)
def dev_shm_too_small(ctx: Context) -> Outcome:
    facts = ctx.facts
    node = facts.node
    if node is None or node.shm is None:
        return Skip("the node was not probed")
    if node.shm.total_bytes is None:
        return Skip(f"{node.shm.path} could not be read: {node.shm.error}")
    visible = _visible(ctx) or []
    processes = job_processes(node)
    if processes < 2 and len(visible) < 2:
        return Skip("one process, at most one GPU")
    minimum = shm_minimum_bytes()
    if node.shm.total_bytes >= minimum:
        return []
    why = []
    if processes > 1:
        why.append(f"the job has {processes} processes")
    if len(visible) > 1:
        why.append(f"{len(visible)} GPUs are visible")
    return [
        Finding(
            id="dev-shm-too-small",
            severity=Severity.WARNING,
            title=f"{node.shm.path} holds only {_mib(node.shm.total_bytes)}",
            detail=(
                "NCCL puts a shared-memory segment per peer and channel in /dev/shm for GPUs "
                "of one node, and DataLoader workers hand batches over through it. With "
                f"{_mib(node.shm.total_bytes)} (Docker's and Kubernetes' default is 64 MiB) "
                "a job fails with `NCCL WARN Error while creating shared memory segment` / "
                "`unhandled system error`, or a worker dies with `Bus error`."
            ),
            evidence=(
                f"{node.shm.path}: {_mib(node.shm.total_bytes)} in all, "
                f"{_mib(node.shm.free_bytes or 0)} free; at least {_mib(minimum)} advised",
                f"multi-process here: {', '.join(why)}",
            ),
            data=DevShmTooSmall(
                path=node.shm.path,
                total_bytes=node.shm.total_bytes,
                free_bytes=node.shm.free_bytes,
                minimum_bytes=minimum,
                container=facts.machine.container if facts.machine else None,
            ),
        )
    ]


@remedy("dev-shm-too-small")
def _dev_shm_too_small(finding: Finding[DevShmTooSmall], ctx: Context) -> Sequence[Remedy]:
    remount = Remedy(
        RemedyKind.SHELL,
        "on a host (or a privileged container), make /dev/shm bigger now (as root)",
        f"mount -o remount,size={_SHM_SIZE.upper()} {finding.data.path}\n",
    )
    engine = "podman" if finding.data.container == "podman" else "docker"
    containers = Remedy(
        RemedyKind.SHELL,
        "in a container, start it again with a bigger /dev/shm (your image and options in "
        "place of IMAGE; sharing the host's IPC namespace works too)",
        f"{engine} run --shm-size={_SHM_SIZE} IMAGE\n",
    )
    elsewhere = Remedy(
        RemedyKind.TEXT,
        "in Kubernetes or under Slurm",
        "Kubernetes: mount an emptyDir volume with medium Memory (size limit "
        f"{_SHM_SIZE.rstrip('gG')}Gi) at "
        "/dev/shm in the pod spec. Slurm with enroot/pyxis: the container shares the host's "
        "/dev/shm, so make the host's bigger.",
    )
    if finding.data.container:
        return [containers, remount, elsewhere]
    return [remount, containers, elsewhere]


# --- local-rank-without-gpu ----------------------------------------------------------------


@dataclass(frozen=True)
class LocalRankWithoutGpu(Payload):
    variable: str
    local_rank: int
    visible_gpus: int
    cuda_visible_devices: str | None


@check(
    "local-rank-without-gpu",
    severities=(Severity.ERROR,),
    family="node",
    summary="LOCAL_RANK or SLURM_LOCALID points past the GPUs CUDA_VISIBLE_DEVICES leaves.",
    label="the local rank has a GPU",
    payload=LocalRankWithoutGpu,
)
def local_rank_without_gpu(ctx: Context) -> Outcome:
    facts = ctx.facts
    node = facts.node
    if node is None or node.local_rank is None:
        return Skip("no LOCAL_RANK, SLURM_LOCALID")
    visible = _visible(ctx)
    if visible is None:
        return Skip("no GPU is known")
    rank = node.local_rank
    if rank.value < len(visible):
        return []
    cvd = facts.machine.cuda_visible_devices if facts.machine else None
    shown = f"CUDA_VISIBLE_DEVICES={cvd.value}" if cvd is not None else "all GPUs"
    return [
        Finding(
            id="local-rank-without-gpu",
            severity=Severity.ERROR,
            title=(
                f"{rank.variable}={rank.value} but this process sees "
                f"{len(visible)} GPU{'s' if len(visible) != 1 else ''}"
            ),
            detail=(
                f"`torch.cuda.set_device({rank.variable})` (or `cuda:{rank.value}`) fails with "
                "`CUDA error: invalid device ordinal`. Under Slurm, `--gpus-per-task` or "
                "`--gpu-bind` gives each task its own GPU as cuda:0 while SLURM_LOCALID keeps "
                "counting tasks on the node."
            ),
            evidence=(
                f"{rank.variable}={rank.value}; {shown} leaves cuda:0..cuda:{len(visible) - 1}"
                if visible
                else f"{rank.variable}={rank.value}; {shown} leaves no GPU",
            ),
            data=LocalRankWithoutGpu(
                variable=rank.variable,
                local_rank=rank.value,
                visible_gpus=len(visible),
                cuda_visible_devices=cvd.value if cvd is not None else None,
            ),
        )
    ]


@remedy("local-rank-without-gpu")
def _local_rank_without_gpu(
    finding: Finding[LocalRankWithoutGpu], ctx: Context
) -> Sequence[Remedy]:
    import shlex

    variable = finding.data.variable
    pick = (
        f'import os, torch; i = int(os.environ["{variable}"]) % torch.cuda.device_count(); '
        'torch.cuda.set_device(i); print(f"cuda:{i}", torch.cuda.get_device_name(i))'
    )
    machine = ctx.facts.machine
    gpus = len(machine.gpus) if machine is not None and machine.gpus else 0
    per_node = str(gpus) if gpus else "N"
    remedies = [
        Remedy(
            RemedyKind.SHELL,
            "pick the GPU among those the task can see, with the expression this command "
            "runs (put it in the training script; with one GPU per task it is cuda:0, the "
            "GPU Slurm bound to the task)",
            f"{shlex.quote(ctx.python)} -c {shlex.quote(pick)}\n",
        )
    ]
    if variable == "SLURM_LOCALID":
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "or give each node's one task all its GPUs, and let torchrun start a process "
                "per GPU (without binding a GPU to each task; your script in place of train.py)",
                f"srun --ntasks-per-node=1 --gpus-per-node={per_node} torchrun "
                f"--nproc-per-node={per_node} train.py\n",
            )
        )
    return remedies


# --- gpu-p2p-unavailable -------------------------------------------------------------------


@dataclass(frozen=True)
class P2PPair:
    gpu_a: int
    gpu_b: int
    status: str
    topology: str | None


@dataclass(frozen=True)
class GpuP2PUnavailable(Payload):
    pairs: tuple[P2PPair, ...]


@check(
    "gpu-p2p-unavailable",
    severities=(Severity.WARNING,),
    family="node",
    summary="NVML reports that two visible GPUs cannot access each other's memory (P2P).",
    label="GPUs reach each other (P2P)",
    payload=GpuP2PUnavailable,
    requires=("machine", "driver"),
)
def gpu_p2p_unavailable(ctx: Context) -> Outcome:
    machine = ctx.facts.machine
    visible = _visible(ctx)
    if machine is None or machine.nvml is None or visible is None:
        return Skip("no GPU is known")
    if len(visible) < 2:
        return Skip("fewer than two GPUs are visible")
    indices = {g.index for g in visible}
    names = {g.index: g.name for g in visible}
    broken = [
        link
        for link in machine.nvml.p2p
        if link.gpu_a in indices and link.gpu_b in indices and link.status != "ok"
    ]
    if not broken:
        return []
    return [
        Finding(
            id="gpu-p2p-unavailable",
            severity=Severity.WARNING,
            title=(
                f"P2P is unavailable between {len(broken)} pair"
                f"{'s' if len(broken) != 1 else ''} of visible GPUs"
            ),
            detail=(
                "NCCL then moves data between these GPUs through host memory (its SHM "
                "transport, in /dev/shm): collectives are slower, and a small /dev/shm fails "
                "them. NVML's answer is the driver's view of the PCIe/NVLink topology; the "
                "same IOMMU or ACS settings that make it refuse P2P can also make P2P that it "
                "allows hang (NVIDIA/nccl#1637)."
            ),
            evidence=tuple(
                f"GPU {link.gpu_a} ({names[link.gpu_a]}) <-> GPU {link.gpu_b} "
                f"({names[link.gpu_b]}): {link.status}"
                + (f"; connected through {link.topology}" if link.topology else "")
                for link in broken
            ),
            data=GpuP2PUnavailable(
                tuple(P2PPair(k.gpu_a, k.gpu_b, k.status, k.topology) for k in broken)
            ),
        )
    ]


@remedy("gpu-p2p-unavailable")
def _gpu_p2p_unavailable(finding: Finding[GpuP2PUnavailable], ctx: Context) -> Sequence[Remedy]:
    return [
        Remedy(
            RemedyKind.SHELL,
            "see the driver's P2P matrix and topology",
            "nvidia-smi topo -p2p r\nnvidia-smi topo -m\n",
        ),
        Remedy(
            RemedyKind.TEXT,
            "on PCIe machines, let the GPUs reach each other",
            "Disable PCIe ACS in the BIOS or boot with `iommu=pt` (Intel: `intel_iommu=on "
            "iommu=pt`); inside a VM, pass the GPUs through on one PCIe switch. Until then "
            "NCCL uses host memory: keep /dev/shm large (dev-shm-too-small).",
        ),
    ]


# --- socket-interface-ambiguous ------------------------------------------------------------


@dataclass(frozen=True)
class SocketInterfaceAmbiguous(Payload):
    virtual: tuple[str, ...]
    candidates: tuple[str, ...]  # the other interfaces up, with an IPv4 address


@check(
    "socket-interface-ambiguous",
    severities=(Severity.WARNING,),
    family="node",
    summary="A multi-node job leaves NCCL and gloo to choose among interfaces, some virtual.",
    label="the interface between nodes is named",
    payload=SocketInterfaceAmbiguous,
)
def socket_interface_ambiguous(ctx: Context) -> Outcome:
    node = ctx.facts.node
    if node is None:
        return Skip("the node was not probed")
    if job_nodes(node) < 2:
        return Skip("not a multi-node job")
    if node.socket_ifname:
        return []
    candidates = [
        i
        for i in node.interfaces
        if i.up
        and not i.skipped_by_default
        and any("." in a and not a.startswith("169.254.") for a in i.addresses)
    ]
    virtual = [i.name for i in candidates if virtual_interface(i.name)]
    real = [i.name for i in candidates if not virtual_interface(i.name)]
    if not virtual or not real:
        return []
    return [
        Finding(
            id="socket-interface-ambiguous",
            severity=Severity.WARNING,
            title=f"NCCL and gloo may talk to other nodes through {', '.join(virtual)}",
            detail=(
                "NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME are unset, so NCCL picks an "
                "interface on its own (it leaves out only lo and docker*) and gloo takes the "
                "one its host name resolves to. A virtual interface's address is not "
                "reachable from other nodes: the job fails with `socketStartConnect: Connect "
                "to … failed` or `No route to host`, or hangs in the rendezvous."
            ),
            evidence=(
                "up, with an IPv4 address: "
                + ", ".join(
                    f"{i.name} ({', '.join(a for a in i.addresses if '.' in a)})"
                    for i in candidates
                ),
                f"the job spans {job_nodes(node)} nodes",
            ),
            data=SocketInterfaceAmbiguous(tuple(virtual), tuple(real)),
        )
    ]


@remedy("socket-interface-ambiguous")
def _socket_interface_ambiguous(
    finding: Finding[SocketInterfaceAmbiguous], ctx: Context
) -> Sequence[Remedy]:
    candidates = finding.data.candidates
    if not candidates:
        return []
    return [
        Remedy(
            RemedyKind.ENV,
            "name the interface that reaches the other nodes (the same name on every node)",
            f"export NCCL_SOCKET_IFNAME={','.join(candidates)} "
            f"GLOO_SOCKET_IFNAME={candidates[0]}\n",
        )
    ]
