"""The collective stage under torchrun: the seam between the doctor and its child.

``torch-doctor check --deep`` run by torchrun (RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set) starts ``collective_inside.py`` with the inspected interpreter, in a
process group of its own, after the single-node report (its runtime stages included) is
known. The caller is ``cli._check`` -> ``doctor.collective.run_collective``: it starts a
``CollectiveStage``, takes its ``result()`` (this rank's facts; rank 0's hold every
rank's), and calls ``release(exit_code)`` once the report is shown. A rank whose torch did
not import in the runtime probe starts no child (``SkippedCollective``): only the wait that
lets rank 0 report first is kept.
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
from doctor.probe.progress import ProgressLine
from doctor.probe.text import clean, clean_tree

__all__ = [
    "TORCHRUN_VARIABLES",
    "CollectiveStage",
    "SkippedCollective",
    "out_of_store_wait",
    "rank_result",
    "torchrun_present",
]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
MARKER = "TORCH_DOCTOR_COLLECTIVE "
# What `import torch` may take on a loaded node before the stage's own timeouts start.
IMPORT_ALLOWANCE = 60.0
# Stages in which the child has not joined the rendezvous store (collective_inside.py).
NO_STORE_STAGES = ("import torch", "join the rendezvous store")
# 1 MiB of float32: enough to see a bandwidth, cheap on a CPU.
DEFAULT_ELEMENTS = 1 << 18
# Rank 0's child, after its answer, waits for its doctor's "shown", then up to --timeout
# for the other ranks' "shown", then tells them rank 0's exit status (release()).
RELEASE_GRACE = 30.0
# Bytes of one line read from the child: its answer carries every rank's compact report.
LINE_LIMIT = 64 * 1024 * 1024
STDERR_LINE_LIMIT = 64 * 1024
# Once stdout ended, how long the child may take to exit before it is killed.
EXIT_WAIT = 5.0


def torchrun_present(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return all(env.get(name) for name in TORCHRUN_VARIABLES)


def _rank(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name, "")
    return int(value) if value.isdigit() else 0


def out_of_store_wait(timeout: float) -> float:
    """How long a rank that never reached the rendezvous store stays after its report.

    It cannot hear rank 0 finish, and rank 0 may be behind it by its whole runtime probe
    (3 × --timeout) plus its collective (joining, then the results: 2 × --timeout and a
    grace). torchrun stops this rank as soon as rank 0 exits with an error, so the wait is
    normally cut short; without torchrun it ends on its own."""
    return 5 * timeout + 15


_RESULT_FIELDS = {
    "rank": int,
    "host": str,
    "status": str,
    "stage": str,
    "backend": str,
    "error": str,
    "seconds": float,
    "bus_bandwidth_bytes": float,
    "wrong_elements": int,
    "missing": str,
}


def rank_result(data: Any) -> RankResult:
    """One rank's result from the child's JSON; ValueError when it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("rank"), int):
        raise ValueError(f"not a rank's result: {str(data)[:80]!r}")
    values: dict[str, Any] = {}
    for name, kind in _RESULT_FIELDS.items():
        value = data.get(name)
        if value is None:
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"rank {data['rank']}: {name} is {type(value).__name__}")
        values[name] = clean(value) if isinstance(value, str) else value
    if "status" not in values:
        raise ValueError(f"rank {data['rank']}: no status")
    values.setdefault("host", None)
    return RankResult(**values)


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
        import_allowance: float = IMPORT_ALLOWANCE,
    ) -> None:
        env = dict(os.environ if environ is None else environ)
        self.rank = _rank(env, "RANK")
        self.world_size = _rank(env, "WORLD_SIZE")
        self.elements = elements
        self.timeout = timeout
        self.import_allowance = import_allowance
        self.started = time.monotonic()
        # rank 0 answers after every rank (one timeout for joining, one for the
        # collective, a grace), the others after their own part; all after `import torch`
        self.deadline = self.started + self.deadline_seconds
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._answered = False
        source = (Path(__file__).parent / "collective_inside.py").read_text(encoding="utf-8")
        request = {"timeout": timeout, "elements": elements, "report": report, "host": host}
        self.start_error: str | None = None
        self._out_of_store = False  # this rank's child never joined the rendezvous store
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr_reader: threading.Thread | None = None
        # The one containment of every child (doctor/probe/contained.py): its own session,
        # found again by kill_all on SIGINT/SIGTERM/SIGHUP, daemons it leaves are marked.
        self.child = Contained(
            [python, "-B", "-c", source, "torch-doctor-collective"],
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
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()

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
        return CollectiveFacts(self.rank, self.world_size, self.elements, error=clean(error))

    def waiting(self) -> list[str]:
        """For the status line: what this rank waits for in the collective."""
        if self._answered or self.proc is None:
            return []
        if self.rank == 0:
            return [f"the {self.world_size} ranks' all-reduce (rank 0 collects their results)"]
        return [f"the all-reduce over {self.world_size} ranks (rank {self.rank})"]

    def result(self) -> CollectiveFacts:
        """This rank's facts (rank 0: every rank's); never raises, never waits past the
        deadline."""
        try:
            return self._result()
        finally:
            self._answered = True

    def _result(self) -> CollectiveFacts:
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
            # Its stdout ended without an answer: it exits, or it closed fd 1 and hangs
            # (then it is stopped at the deadline, as a child that says nothing is).
            try:
                code: int | None = self.proc.wait(max(EXIT_WAIT, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
                self.kill()
            if self._stderr_reader is not None:
                self._stderr_reader.join(1.0)  # what it said last (unless a descendant holds it)
            tail = "".join(self._stderr[-3:]).strip()
            if code is None:
                how = "closed its output without an answer and was stopped"
            elif code < 0:
                how = f"exited with signal {-code}"
            else:
                how = f"exited with status {code}"
            return self._failed(f"the collective stage {how}" + (f": {tail}" if tail else ""))
        try:
            answer = json.loads(line)
            if not isinstance(answer, dict) or not isinstance(answer.get("ranks"), list):
                raise ValueError("not an object with the ranks' results")
            own = answer.get("self")
            reports = answer.get("reports") or {}
            if not isinstance(reports, dict):
                raise ValueError("the reports are not an object")
            world = answer.get("world_size", self.world_size)
            if not isinstance(world, int) or isinstance(world, bool):
                raise ValueError("the world size is not a number")
            facts = CollectiveFacts(
                rank=self.rank,
                world_size=world,
                elements=self.elements,
                ranks=tuple(rank_result(r) for r in answer["ranks"]),
                node_reports={clean(str(k)): clean_tree(v) for k, v in reports.items()},
            )
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            self.kill()
            return self._failed(f"the collective stage's answer is unreadable: {exc}")
        self._out_of_store = not isinstance(own, dict) or own.get("stage") in NO_STORE_STAGES
        return facts

    @property
    def deadline_seconds(self) -> float:
        return self.import_allowance + 3 * self.timeout

    def release(self, exit_code: int = 0) -> None:
        """This rank has shown its report. Every rank's child says so in the store; rank
        0's child waits (up to --timeout) until every rank that has its result has shown
        its report, then tells them rank 0's exit status and lets them go. torchrun stops
        every rank as soon as one exits with an error: rank 0 reports first, exits last,
        and its status is the job's."""
        if self.proc is None or self._out_of_store:
            self.kill()
            if self.rank != 0:
                # It never reached the store, so it cannot hear rank 0 finish: stay until
                # rank 0 has had its time (torchrun stops this rank when rank 0 exits).
                _wait_for_rank_0(self.started + out_of_store_wait(self.timeout))
            return
        self.child.send(f"shown {exit_code}\n")
        with contextlib.suppress(OSError, ValueError, AssertionError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        end = self.deadline + RELEASE_GRACE
        words = ["rank 0 to finish the job's report"]
        if self.rank == 0:
            end = min(end, time.monotonic() + self.timeout + 10)
            words = ["the other ranks to show their reports"]
        with ProgressLine(lambda: words), contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(max(0.1, end - time.monotonic()))
        self.kill()

    def kill(self) -> None:
        if self.proc is None:
            return
        self.child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class SkippedCollective:
    """This rank starts no child (its torch did not import): ``release`` only waits, so
    that rank 0 reports before torchrun stops the job."""

    def __init__(self, rank: int, timeout: float) -> None:
        self.rank = rank
        self.timeout = timeout
        self.started = time.monotonic()

    def waiting(self) -> list[str]:
        return []

    def release(self, exit_code: int = 0) -> None:
        if self.rank != 0:  # rank 0 has reported: nothing to wait for
            _wait_for_rank_0(self.started + out_of_store_wait(self.timeout))

    def kill(self) -> None:
        pass


def _wait_for_rank_0(end: float) -> None:
    """Stay (saying so on a terminal) until ``end``, or until torchrun stops this rank."""
    words = ["rank 0 to report (torchrun stops this rank once rank 0 has)"]
    with ProgressLine(lambda: words):
        time.sleep(max(0.0, end - time.monotonic()))
