"""Make one torchrun rank hang in the collective stage, as a stuck node would, every time.

Usage: python torchrun_hang.py LISTEN_PORT STORE_PORT RELEASE_FILE PID_FILE

Started beside the rank's doctor, whose MASTER_PORT is LISTEN_PORT: the doctor's
collective child reaches the job's rendezvous store (STORE_PORT) through this relay. When
the child sends the key it joins with (``joined/<RANK>``), it is stopped (SIGSTOP) before
that message is passed on: it has joined the store, and can go no further in the
collective, whatever the other ranks do and however late it came (stopping it when it
merely connected, as this helper once did, lost the race when it was the last rank to
arrive: the all-reduce was over before the stop). Its pid goes to PID_FILE (so the test can
always clean up); it goes on (SIGCONT) only once RELEASE_FILE exists: rank 0's report,
written after rank 0 has named the hung rank.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time

import psutil

DEADLINE = 240.0


def owner_of(peer: tuple[str, int]) -> int | None:
    """The pid of the process whose TCP connection has ``peer`` as its local end."""
    for connection in psutil.net_connections(kind="tcp"):
        mine = connection.pid == os.getpid()
        if connection.laddr and connection.laddr.port == peer[1] and connection.pid and not mine:
            return int(connection.pid)
    return None


class Relay:
    def __init__(self, store_port: int, key: bytes, pid_file: str) -> None:
        self.store_port = store_port
        self.key = key
        self.pid_file = pid_file
        self.stopped: int | None = None
        self.lock = threading.Lock()

    def serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.store_port))
        peer = client.getpeername()
        threading.Thread(target=self.pipe, args=(upstream, client, None), daemon=True).start()
        self.pipe(client, upstream, peer)

    def pipe(self, source: socket.socket, target: socket.socket, peer: object) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if peer is not None and self.stopped is None and self.key in tail + data:
                    self.stop(peer)  # before the key reaches the store
                tail = data[-len(self.key) :]
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def stop(self, peer: object) -> None:
        with self.lock:
            if self.stopped is not None:
                return
            pid = None
            for _ in range(100):
                pid = owner_of(peer)  # type: ignore[arg-type]
                if pid is not None:
                    break
                time.sleep(0.01)
            if pid is None:
                return
            os.kill(pid, signal.SIGSTOP)
            with open(self.pid_file, "w") as handle:
                handle.write(str(pid))
            self.stopped = pid


def main() -> int:
    listen_port, store_port = int(sys.argv[1]), int(sys.argv[2])
    release, pid_file = sys.argv[3], sys.argv[4]
    relay = Relay(store_port, f"joined/{os.environ['RANK']}".encode(), pid_file)
    server = socket.create_server(("127.0.0.1", listen_port))
    server.settimeout(0.2)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if relay.stopped is not None and os.path.exists(release):
            os.kill(relay.stopped, signal.SIGCONT)
            return 0
        try:
            client, _ = server.accept()
        except socket.timeout:
            continue
        threading.Thread(target=relay.serve, args=(client,), daemon=True).start()
    if relay.stopped is not None:
        os.kill(relay.stopped, signal.SIGCONT)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
