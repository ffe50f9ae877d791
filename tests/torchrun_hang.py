"""Make one torchrun rank hang in the collective stage, as a stuck node would.

Usage: python torchrun_hang.py DOCTOR_PID MASTER_PORT RELEASE_FILE PID_FILE

Waits for the doctor's collective child (``torch-doctor-collective`` on its command
line) to connect to the job's rendezvous store, stops it with SIGSTOP, writes its pid to
PID_FILE (so the test can always clean up), and lets it go on (SIGCONT) only once
RELEASE_FILE exists: rank 0's report, written after rank 0 has named the hung rank.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil


def collective_child(doctor: int) -> psutil.Process | None:
    try:
        children = psutil.Process(doctor).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if "torch-doctor-collective" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def main() -> int:
    doctor, port, release, pid_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        child = collective_child(doctor)
        if child is not None:
            try:
                joined = any(
                    c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                    for c in child.net_connections(kind="tcp")
                )
            except psutil.NoSuchProcess:
                return 1
            if joined:
                os.kill(child.pid, signal.SIGSTOP)
                with open(pid_file, "w") as handle:
                    handle.write(str(child.pid))
                while not os.path.exists(release) and time.monotonic() < deadline:
                    time.sleep(0.2)
                os.kill(child.pid, signal.SIGCONT)
                return 0
        time.sleep(0.02)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
