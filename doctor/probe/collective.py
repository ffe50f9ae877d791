"""The collective stage under torchrun: the seam between the doctor and its child.

``torch-doctor check --deep`` run by torchrun (RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set) starts ``collective_inside.py`` with the inspected interpreter, in a
process group of its own, after the single-node report is known. The deep runner of
issue 12 calls the same two steps: ``CollectiveStage(...).result()`` after its own
stages, and ``release()`` once the report is shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from doctor.facts.collective import CollectiveFacts, RankResult
from doctor.probe.contained import Contained

__all__ = ["TORCHRUN_VARIABLES", "CollectiveStage", "torchrun_present"]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
MARKER = "TORCH_DOCTOR_COLLECTIVE "
# What `import torch` may take on a loaded node before the stage's own timeouts start.
IMPORT_ALLOWANCE = 60.0
# Stages in which the child has not joined the rendezvous store (collective_inside.py).
NO_STORE_STAGES = ("import torch", "join the rendezvous store")
# 1 MiB of float32: enough to see a bandwidth, cheap on a CPU.
DEFAULT_ELEMENTS = 1 << 18
# Rank 0's child waits this long for "shown" after its answer (release()).
RELEASE_GRACE = 30.0
# Bytes of one line read from the child: its answer carries every rank's compact report.
LINE_LIMIT = 64 * 1024 * 1024
STDERR_LINE_LIMIT = 64 * 1024


def torchrun_present(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return all(env.get(name) for name in TORCHRUN_VARIABLES)


def _rank(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name, "")
    return int(value) if value.isdigit() else 0


class CollectiveStage:
    """The child for this rank, started at once; ``result`` waits for its answer."""

    def __init__(
        self,
        python: str,
        report: dict[str, Any],
        *,
        host: str,
        timeout: float,
        elements: int = DEFAULT_ELEMENTS,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = dict(os.environ if environ is None else environ)
        self.rank = _rank(env, "RANK")
        self.world_size = _rank(env, "WORLD_SIZE")
        self.elements = elements
        self.timeout = timeout
        # rank 0 answers after every rank (one timeout for joining, one for the
        # collective, a grace), the others after their own part; all after `import torch`
        self.deadline = time.monotonic() + IMPORT_ALLOWANCE + 3 * timeout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        source = (Path(__file__).parent / "collective_inside.py").read_text(encoding="utf-8")
        request = {"timeout": timeout, "elements": elements, "report": report, "host": host}
        self.start_error: str | None = None
        self._out_of_store = False  # this rank's child never joined the rendezvous store
        self.proc: subprocess.Popen[bytes] | None = None
        # The one containment of every child (doctor/probe/contained.py): its own session,
        # found again by kill_all on SIGINT/SIGTERM/SIGHUP, daemons it leaves are marked.
        self.child = Contained(
            [python, "-c", source, "torch-doctor-collective"],
            timeout=self.deadline_seconds + RELEASE_GRACE,
            env=env,
            open_stdin=True,
        )
        if self.child.proc is None:
            self.start_error = self.child.start_error
            return
        self.proc = self.child.proc
        self.child.send(json.dumps(request) + "\n")
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            # Bounded lines: a library writing without newlines cannot fill memory.
            while line := self.proc.stdout.readline(LINE_LIMIT):
                text = line.decode("utf-8", "replace")
                if text.startswith(MARKER) and text.endswith("\n"):
                    self._lines.put(text[len(MARKER) :])
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            while line := self.proc.stderr.readline(STDERR_LINE_LIMIT):
                self._stderr.append(line.decode("utf-8", "replace"))
                del self._stderr[:-20]  # the tail is what explains a crash

    def _failed(self, error: str) -> CollectiveFacts:
        self._out_of_store = True  # whether it reached the store is unknown: assume not
        return CollectiveFacts(self.rank, self.world_size, self.elements, error=error)

    def result(self) -> CollectiveFacts:
        """This rank's facts (rank 0: every rank's); never raises."""
        if self.proc is None:
            return self._failed(f"the collective stage could not start: {self.start_error}")
        try:
            line = self._lines.get(timeout=max(0.1, self.deadline - time.monotonic()))
        except queue.Empty:
            self.kill()
            return self._failed(
                f"the collective stage gave no answer within {self.deadline_seconds:g} s "
                "and was stopped"
            )
        if line is None:
            code = self.proc.wait()
            tail = "".join(self._stderr[-3:]).strip()
            how = f"signal {-code}" if code < 0 else f"status {code}"
            return self._failed(
                f"the collective stage exited with {how}" + (f": {tail}" if tail else "")
            )
        try:
            answer = json.loads(line)
            facts = CollectiveFacts(
                rank=self.rank,
                world_size=int(answer.get("world_size", self.world_size)),
                elements=self.elements,
                ranks=tuple(RankResult(**r) for r in answer["ranks"]),
                node_reports=dict(answer.get("reports") or {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            self.kill()
            return self._failed(f"the collective stage's answer is unreadable: {exc}")
        self._out_of_store = (answer.get("self") or {}).get("stage") in NO_STORE_STAGES
        return facts

    @property
    def deadline_seconds(self) -> float:
        return IMPORT_ALLOWANCE + 3 * self.timeout

    def release(self) -> None:
        """This rank has shown its report. Rank 0 lets its child tell the other ranks to
        go; the other ranks wait for that before they exit, because torchrun stops every
        rank as soon as one exits with an error, and rank 0 must have reported first."""
        if self.rank == 0:
            if self.proc is None:
                return
            self.child.send("shown\n")
            with contextlib.suppress(OSError, ValueError, AssertionError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        elif self._out_of_store:
            # It never reached the store, so it cannot hear rank 0 finish: stay until rank
            # 0's process group timeout and its grace have passed.
            time.sleep(max(0.0, min(2 * self.timeout + 15, self.deadline - time.monotonic())))
        elif self.proc is not None:
            # Its child waits in the store for rank 0's word.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(max(0.1, self.deadline - time.monotonic()))
        self.kill()

    def kill(self) -> None:
        if self.proc is None:
            return
        self.child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
