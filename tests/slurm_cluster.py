"""A one-node Slurm cluster for tests: munged, slurmctld and slurmd from Debian's
slurm-wlm and munge packages, in the foreground, configured under a temporary directory.

``start_cluster(root)`` returns a ``SlurmCluster`` whose ``env`` runs srun/sinfo against
it; ``stop()`` ends the three daemons (by their pids, as started here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SlurmCluster", "slurm_unavailable", "start_cluster"]

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "srun", "sinfo")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _find(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def slurm_unavailable() -> str | None:
    """Why a cluster cannot run here, or None."""
    missing = [name for name in DAEMONS if _find(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs as the submitting user"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.root.glob("*.log"))
        )


def start_cluster(root: Path, cpus: int = 2, wait: float = 60.0) -> SlurmCluster:
    host = socket.gethostname().split(".", 1)[0]
    munge = root / "munge"
    for directory in (root / "state", root / "spool", munge):
        directory.mkdir(parents=True, exist_ok=True)
    munge.chmod(0o700)
    key = munge / "munge.key"
    subprocess.run([str(_find("mungekey")), "-c", "-k", str(key)], check=True)
    key.chmod(0o400)
    sock = munge / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=tdtest",
                f"SlurmctldHost={host}(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "AuthType=auth/munge",
                f"AuthInfo=socket={sock}",
                "CredType=cred/munge",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'slurmd.log'}",
                # No cgroups: the test machine may be a container.
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "SchedulerType=sched/builtin",
                "ReturnToService=2",
                "MpiDefault=none",
                "JobCompType=jobcomp/none",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP "
                "OverSubscribe=FORCE:4",
                "",
            ]
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root, env)
    commands = [
        [
            str(_find("munged")),
            "-F",
            "-f",
            f"--key-file={key}",
            f"--socket={sock}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={root / 'munged.log'}",
            f"--seed-file={munge / 'seed'}",
        ],
        [str(_find("slurmctld")), "-D", "-i"],
        [str(_find("slurmd")), "-D", "-N", host],
    ]
    try:
        for argv in commands:
            with open(root / f"{Path(argv[0]).name}.out.log", "wb") as out:
                cluster.processes.append(
                    subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
                )
            time.sleep(0.3 if argv[0].endswith("munged") else 0)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            state = subprocess.run(
                [str(_find("sinfo")), "-h", "-o", "%T"], env=env, capture_output=True, text=True
            )
            if state.stdout.strip() == "idle":
                return cluster
            if any(p.poll() is not None for p in cluster.processes):
                break
            time.sleep(0.5)
        raise RuntimeError("the Slurm cluster did not come up:\n" + cluster.logs())
    except BaseException:
        cluster.stop()
        raise
