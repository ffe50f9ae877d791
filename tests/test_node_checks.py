"""Node facts and the node family (dev-shm-too-small, local-rank-without-gpu,
gpu-p2p-unavailable): probes on a fake /proc and /sys, checks on hand-built facts, and
scenarios through the CLI with the NVML stand-in and a real small /dev/shm."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from doctor.checks import Skip
from doctor.facts import Facts, MachineFacts
from doctor.facts.machine import GpuFacts, NvmlFacts, P2PLink
from doctor.facts.node import (
    InterfaceFacts,
    LocalRankFacts,
    NodeFacts,
    NodeIdentity,
    SharedMemoryFacts,
)
from doctor.probe.machine import parse_visible_devices
from doctor.probe.node import job_variables, probe_node, read_cgroup
from tests.driver_stub import H100, RTX_4090, Driver, DriverStubs
from tests.factory import FakeEnv, doctor_env, run_doctor
from tests.handmade import CheckUnderTest, healthy_facts

SHM = CheckUnderTest("dev-shm-too-small")
LOCAL_RANK = CheckUnderTest("local-rank-without-gpu")
P2P = CheckUnderTest("gpu-p2p-unavailable")
MIB = 1024 * 1024


# --- probes ---------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_limits_are_read_from_the_process_cgroup(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/job/task\n",
            "sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
            "sys/fs/cgroup/job/task/memory.max": "8589934592\n",
            "sys/fs/cgroup/job/task/cpu.max": "250000 100000\n",
        },
    )
    cgroup = read_cgroup(root)
    assert (cgroup.version, cgroup.memory_limit_bytes, cgroup.cpu_limit) == (2, 8 << 30, 2.5)


def test_cgroup_v2_without_limits_and_v1_in_a_container(tmp_path: Path) -> None:
    v2 = _tree(
        tmp_path / "v2",
        {
            "proc/self/cgroup": "0::/\n",
            "sys/fs/cgroup/cgroup.controllers": "",
            "sys/fs/cgroup/memory.max": "max\n",
            "sys/fs/cgroup/cpu.max": "max 100000\n",
        },
    )
    assert read_cgroup(v2) == dataclasses.replace(read_cgroup(v2), version=2)
    assert read_cgroup(v2).memory_limit_bytes is None and read_cgroup(v2).cpu_limit is None
    # v1 in a container: /proc/self/cgroup names the host's path, the mount is the root.
    v1 = _tree(
        tmp_path / "v1",
        {
            "proc/self/cgroup": "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": "4294967296\n",
            "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
        },
    )
    cgroup = read_cgroup(v1)
    assert (cgroup.version, cgroup.memory_limit_bytes, cgroup.cpu_limit) == (1, 4 << 30, None)


def test_job_variables_keep_names_and_drop_secret_values() -> None:
    env = {
        "NCCL_DEBUG": "INFO",
        "NCCL_IB_HCA": "mlx5",
        "GLOO_SOCKET_IFNAME": "eth0",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "TORCH_HUB_TOKEN": "hf_secret",
        "HOME": "/root",
    }
    assert job_variables(env) == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "GLOO_SOCKET_IFNAME": "eth0",
        "NCCL_DEBUG": "INFO",
        "NCCL_IB_HCA": "mlx5",
        "TORCH_HUB_TOKEN": "<redacted>",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }


def test_every_nccl_net_plugin_on_the_loader_path_is_named_beside_the_one_nccl_loads(
    tmp_path: Path,
) -> None:
    """NCCL dlopens libnccl-net.so (or NCCL_NET_PLUGIN's); another plugin on the path (an
    AWS OFI one beside HPC-X's) is not loaded, and is worth a line in the report."""
    hpcx, ofi = tmp_path / "hpcx", tmp_path / "ofi"
    for directory, name in ((hpcx, "libnccl-net.so"), (ofi, "libnccl-net-aws-ofi.so")):
        directory.mkdir()
        (directory / name).write_bytes(b"")
    (ofi / "libnccl.so.2").write_bytes(b"")  # NCCL itself is not a plugin
    nccl = probe_node(environ={"LD_LIBRARY_PATH": f"{hpcx}:{ofi}"}).nccl
    assert nccl is not None
    assert nccl.plugin == str(hpcx / "libnccl-net.so")
    here = [c for c in nccl.plugin_candidates if c.startswith(str(tmp_path))]
    assert here == [str(hpcx / "libnccl-net.so"), str(ofi / "libnccl-net-aws-ofi.so")]
    with_name = probe_node(environ={"LD_LIBRARY_PATH": str(ofi), "NCCL_NET_PLUGIN": "aws-ofi"})
    assert with_name.nccl is not None
    assert with_name.nccl.plugin == str(ofi / "libnccl-net-aws-ofi.so")


# --- checks on hand-built facts --------------------------------------------------------


def node_facts(
    *,
    shm_mib: int = 64 * 1024,
    ids: dict[str, str] | None = None,
    local_rank: tuple[str, int] | None = None,
    gpus: int = 1,
    visible: str | None = None,
    p2p: tuple[P2PLink, ...] = (),
) -> Facts:
    node = NodeFacts(
        identity=NodeIdentity("node1", ids or {}),
        shm=SharedMemoryFacts("/dev/shm", shm_mib * MIB, shm_mib * MIB),
        local_rank=LocalRankFacts(*local_rank) if local_rank else None,
    )
    machine = MachineFacts(
        nvml=NvmlFacts(
            status="ok",
            gpus=tuple(GpuFacts(i, "NVIDIA H100", (9, 0)) for i in range(gpus)),
            p2p=p2p,
        ),
        cuda_visible_devices=(
            parse_visible_devices("CUDA_VISIBLE_DEVICES", visible) if visible is not None else None
        ),
    )
    return dataclasses.replace(healthy_facts(), node=node, machine=machine)


def test_a_64_mib_shm_is_flagged_for_a_multi_process_job() -> None:
    finding = SHM.only(node_facts(shm_mib=64, ids={"WORLD_SIZE": "8"}))
    assert finding.title == "/dev/shm holds only 64 MiB"
    assert "the job has 8 processes" in finding.evidence[1]
    assert SHM.only(node_facts(shm_mib=64, gpus=2)).evidence[1].endswith("2 GPUs are visible")


def test_shm_is_not_judged_for_one_process_on_one_gpu_and_is_quiet_when_large() -> None:
    assert isinstance(SHM.run(node_facts(shm_mib=64)), Skip)
    assert SHM.run(node_facts(shm_mib=16 * 1024, ids={"WORLD_SIZE": "8"})) == []


def test_a_local_rank_past_the_visible_gpus_is_an_error() -> None:
    finding = LOCAL_RANK.only(node_facts(local_rank=("SLURM_LOCALID", 2), gpus=4, visible="2"))
    assert finding.title == "SLURM_LOCALID=2 but this process sees 1 GPU"
    assert "CUDA_VISIBLE_DEVICES=2 leaves cuda:0..cuda:0" in finding.evidence[0]
    assert LOCAL_RANK.run(node_facts(local_rank=("LOCAL_RANK", 3), gpus=4)) == []
    assert isinstance(LOCAL_RANK.run(node_facts(gpus=4)), Skip)


def _bash_n(text: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert checked.returncode == 0, (text, checked.stderr)


def test_shm_remedies_in_a_container_start_with_the_run_option() -> None:
    all_facts = node_facts(shm_mib=64, ids={"WORLD_SIZE": "8"})
    assert all_facts.machine is not None
    in_docker = dataclasses.replace(
        all_facts, machine=dataclasses.replace(all_facts.machine, container="docker")
    )
    remedies = SHM.judged(in_docker).remedies
    assert [(r.kind.value, r.text) for r in remedies[:2]] == [
        ("shell", "docker run --shm-size=16g IMAGE\n"),
        ("shell", "mount -o remount,size=16G /dev/shm\n"),
    ]
    for remedy in remedies:
        if remedy.kind.value == "shell":
            _bash_n(remedy.text)
        assert "--" not in remedy.summary  # no option inside the prose


def test_local_rank_remedies_are_commands_that_paste() -> None:
    all_facts = node_facts(local_rank=("SLURM_LOCALID", 2), gpus=4, visible="2")
    remedies = LOCAL_RANK.judged(all_facts).remedies
    assert [r.kind.value for r in remedies] == ["shell", "shell"]
    pick, whole = (r.text for r in remedies)
    assert pick.startswith("/project/.venv/bin/python -c 'import os, torch; ")
    assert 'int(os.environ["SLURM_LOCALID"]) % torch.cuda.device_count()' in pick
    assert (
        whole == "srun --ntasks-per-node=1 --gpus-per-node=4 torchrun --nproc-per-node=4 train.py\n"
    )
    for remedy in remedies:
        _bash_n(remedy.text)
        assert "`" not in remedy.summary  # no command inside the prose


def test_local_rank_under_torchrun_gets_no_srun_command() -> None:
    remedies = LOCAL_RANK.judged(node_facts(local_rank=("LOCAL_RANK", 5), gpus=4)).remedies
    assert len(remedies) == 1 and 'os.environ["LOCAL_RANK"]' in remedies[0].text


def test_p2p_refused_between_visible_gpus_is_named_pair_by_pair() -> None:
    links = (P2PLink(0, 1, "chipset not supported"), P2PLink(1, 2, "ok"), P2PLink(0, 2, "ok"))
    finding = P2P.only(node_facts(gpus=3, p2p=links))
    assert finding.evidence == (
        "GPU 0 (NVIDIA H100) <-> GPU 1 (NVIDIA H100): chipset not supported",
    )
    # GPU 1 hidden: the pair does not concern this process.
    assert P2P.run(node_facts(gpus=3, p2p=links, visible="0,2")) == []


# --- scenarios through the CLI ----------------------------------------------------------


@pytest.fixture
def healthy_env(make_env: Callable[..., FakeEnv]) -> FakeEnv:
    env = make_env()
    env.install_healthy_cu130()
    return env


def test_local_rank_under_slurm_gpu_binding(
    healthy_env: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    four = driver_stubs.env(Driver(gpus=(H100, H100, H100, H100)))
    args = ("--python", str(healthy_env.root), "--no-load", "--format", "json")
    bound = run_doctor(
        *args, cwd=workdir, env={**four, "CUDA_VISIBLE_DEVICES": "1", "SLURM_LOCALID": "1"}
    )
    assert bound.returncode == 1, bound.stderr
    finding = bound.finding("local-rank-without-gpu")
    assert finding["data"]["visible_gpus"] == 1
    whole = run_doctor(*args, cwd=workdir, env={**four, "SLURM_LOCALID": "1"})
    assert "local-rank-without-gpu" not in whole.finding_ids()


def test_p2p_status_comes_from_nvml(
    healthy_env: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    args = ("--python", str(healthy_env.root), "--no-load", "--format", "json")
    refused = run_doctor(
        *args,
        cwd=workdir,
        env=driver_stubs.env(
            Driver(gpus=(RTX_4090,) * 3, p2p=((0, 2, 1),), topology=((0, 2, 50),))
        ),
    )
    finding = refused.finding("gpu-p2p-unavailable")
    assert finding["data"]["pairs"] == [
        {
            "gpu_a": 0,
            "gpu_b": 2,
            "status": "chipset not supported",
            "topology": "the link between NUMA nodes (SYS)",
        }
    ]
    assert refused.json["facts"]["machine"]["nvml"]["p2p"][0] == {
        "gpu_a": 0,
        "gpu_b": 1,
        "status": "ok",
        "topology": "one PCIe switch (PIX)",
    }
    assert finding["evidence"] == [
        "GPU 0 (NVIDIA GeForce RTX 4090) <-> GPU 2 (NVIDIA GeForce RTX 4090): chipset not "
        "supported; connected through the link between NUMA nodes (SYS)"
    ]
    fine = run_doctor(
        *args, cwd=workdir, env=driver_stubs.env(Driver(gpus=(RTX_4090, RTX_4090, RTX_4090)))
    )
    assert "gpu-p2p-unavailable" not in fine.finding_ids()


def run_in_namespace(
    flag: str, script: str, workdir: Path, env: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``script`` in a new mount (-m) or network (-n) namespace; it writes before.json
    and after.json (the doctor's reports before and after the remedy), read here."""
    run = subprocess.run(
        ["unshare", flag, "sh", "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return tuple(  # type: ignore[return-value]
        json.loads((workdir / name).read_text()) for name in ("before.json", "after.json")
    )


def _can_mount_namespaces() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -m fails here: {probe.stderr.strip()}"


@pytest.mark.skipif(_can_mount_namespaces() is not None, reason=str(_can_mount_namespaces()))
def test_a_64_mib_shm_fires_and_the_remount_remedy_clears_it(
    healthy_env: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    """A container-sized /dev/shm (a 64 MiB tmpfs in a private mount namespace); the
    remedy's command runs literally there, and the next run is clean."""
    doctor = [
        sys.executable,
        "-m",
        "doctor",
        "--python",
        str(healthy_env.root),
        "--no-load",
        "--format",
        "json",
        "--output",
    ]
    script = (
        "set -e; mount -t tmpfs -o size=64m tmpfs /dev/shm; "
        f"{' '.join(doctor)} {workdir}/before.json || true; "
        f"python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
        'f=[x for x in d["findings"] if x["id"]=="dev-shm-too-small"][0]; '
        'r=[x for x in f["remedies"] if x["text"].startswith("mount ")][0]; '
        f'open(sys.argv[2],"w").write(r["text"])\' {workdir}/before.json {workdir}/remedy.sh; '
        f"sh {workdir}/remedy.sh; "
        f"{' '.join(doctor)} {workdir}/after.json || true"
    )
    env = doctor_env({**driver_stubs.env(Driver()), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
    before, after = run_in_namespace("-m", script, workdir, env)
    finding = next(f for f in before["findings"] if f["id"] == "dev-shm-too-small")
    assert finding["title"] == "/dev/shm holds only 64 MiB"
    assert (workdir / "remedy.sh").read_text() == "mount -o remount,size=16G /dev/shm\n"
    assert "dev-shm-too-small" not in [f["id"] for f in after["findings"]]
    assert after["facts"]["node"]["shm"]["total_bytes"] == 16 << 30


# --- socket-interface-ambiguous ----------------------------------------------------------

IFACE = CheckUnderTest("socket-interface-ambiguous")


def with_interfaces(ids: dict[str, str], *interfaces: InterfaceFacts, **ifname: str) -> Facts:
    node = NodeFacts(identity=NodeIdentity("n", ids), interfaces=interfaces, socket_ifname=ifname)
    return dataclasses.replace(healthy_facts(), node=node)


ETH0 = InterfaceFacts("eth0", True, ("10.0.0.5", "fe80::1"))
BRIDGE = InterfaceFacts("br-7f3a9c", True, ("172.18.0.1",))
DOCKER = InterfaceFacts("docker0", True, ("172.17.0.1",), skipped_by_default=True)
TWO_NODES = {"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}


def test_a_bridge_beside_the_real_interface_is_flagged_on_a_multi_node_job() -> None:
    finding = IFACE.only(with_interfaces(TWO_NODES, ETH0, BRIDGE, DOCKER))
    assert finding.title == "NCCL and gloo may talk to other nodes through br-7f3a9c"
    assert finding.evidence == (
        "up, with an IPv4 address: eth0 (10.0.0.5), br-7f3a9c (172.18.0.1)",
        "the job spans 2 nodes",
    )
    remedy = IFACE.judged(with_interfaces(TWO_NODES, ETH0, BRIDGE)).remedies[0]
    assert remedy.text == "export NCCL_SOCKET_IFNAME=eth0 GLOO_SOCKET_IFNAME=eth0\n"


def test_interfaces_are_not_judged_on_one_node_and_quiet_when_named() -> None:
    assert isinstance(IFACE.run(with_interfaces({"WORLD_SIZE": "8"}, ETH0, BRIDGE)), Skip)
    named = with_interfaces({"SLURM_NNODES": "4"}, ETH0, BRIDGE, NCCL_SOCKET_IFNAME="eth0")
    assert IFACE.run(named) == []
    assert IFACE.run(with_interfaces({"SLURM_NNODES": "4"}, ETH0, DOCKER)) == []


def _can_make_veth() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare (util-linux) or ip (iproute2) is not installed"
    probe = subprocess.run(
        ["unshare", "-n", "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "eth9"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"no veth in a network namespace: {probe.stderr}"


@pytest.mark.skipif(_can_make_veth() is not None, reason=str(_can_make_veth()))
def test_a_veth_beside_the_uplink_fires_and_naming_the_interface_clears_it(
    healthy_env: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    """A private network namespace: eth9 (the uplink) and veth0 (a container's bridge
    side), both up; the remedy's variables, exported literally, quiet the next run."""
    doctor = (
        f"{sys.executable} -m doctor --python {healthy_env.root} --no-load --format json --output"
    )
    script = (
        "set -e; ip link add veth0 type veth peer name eth9; "
        "ip addr add 10.9.0.2/24 dev eth9; ip link set eth9 up; "
        "ip addr add 172.18.0.1/16 dev veth0; ip link set veth0 up; "
        f"{doctor} before.json || true; "
        'python3 -c \'import json; d=json.load(open("before.json")); '
        'f=[x for x in d["findings"] if x["id"]=="socket-interface-ambiguous"][0]; '
        'open("remedy.sh","w").write(f["remedies"][0]["text"])\'; '
        f". ./remedy.sh; {doctor} after.json || true"
    )
    env = doctor_env({**driver_stubs.env(Driver()), "SLURM_NNODES": "2"})
    before, after = run_in_namespace("-n", script, workdir, env)
    finding = next(f for f in before["findings"] if f["id"] == "socket-interface-ambiguous")
    assert finding["data"] == {"virtual": ["veth0"], "candidates": ["eth9"]}
    assert (workdir / "remedy.sh").read_text() == (
        "export NCCL_SOCKET_IFNAME=eth9 GLOO_SOCKET_IFNAME=eth9\n"
    )
    assert "socket-interface-ambiguous" not in [f["id"] for f in after["findings"]]
    assert after["facts"]["node"]["socket_ifname"] == {
        "NCCL_SOCKET_IFNAME": "eth9",
        "GLOO_SOCKET_IFNAME": "eth9",
    }
