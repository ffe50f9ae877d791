"""The runtime probe (``check --deep``): import torch and run small stages in a contained child.

The child (doctor/probe/runtime_child.py, standard library only) runs in the inspected
interpreter, in its own process group, and reports each stage as a JSON line as it starts
and ends. This side reads those lines as they come, so it knows which stage is running:
a stage that takes longer than ``--timeout``, or a probe that takes longer than its total
limit, is stopped (the child and every process it started) and reported as timed out in
that stage; a child that dies reports its signal in the stage it died in. The stages that
never ran say why. stdout and stderr are captured and bounded; nothing the child prints
reaches the user's terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from doctor.facts.runtime import (
    MappedLibrary,
    RuntimeDevice,
    RuntimeFacts,
    RuntimeStage,
    StageStatus,
)
from doctor.probe.contained import Contained
from doctor.probe.text import clean, clean_tree

__all__ = ["DEFAULT_STAGES", "RuntimeProbe", "probe_runtime", "stage_title"]

CHILD_SOURCE = Path(__file__).with_name("runtime_child.py")
# In order. The child adds one "gpu:N" stage per GPU torch sees, after "build".
DEFAULT_STAGES = ("import", "build", "maps", "cpu", "nccl", "compile")
TOTAL_FACTOR = 3  # the whole probe may take this many --timeout's
STDERR_LIMIT = 64 * 1024  # bytes of the child's stderr kept (the end of it)
STDERR_TAIL_LINES = 12
LINE_LIMIT = 4 * 1024 * 1024  # bytes of stdout without a newline kept (events are far shorter)

_TITLES = {
    "import": ("import torch", "importing torch"),
    "build": ("build and devices", "torch.cuda.is_available()"),
    "maps": ("libraries mapped", "reading what torch mapped"),
    "cpu": ("CPU matmul and conv", "a matmul on the CPU"),
    "nccl": ("NCCL", "NCCL"),
    "compile": ("torch.compile", "torch.compile of a tiny function"),
}


def stage_title(name: str) -> str:
    """The stage's name in words: 'import torch', 'GPU 0: matmul, bf16, conv'."""
    if name.startswith("gpu:"):
        return f"GPU {name[4:]}: alloc, matmul, bf16, conv"
    if name == "gpu":
        return "GPU stages"
    return _TITLES.get(name, (name, name))[0]


def _waiting_words(name: str) -> str:
    if name.startswith("gpu:"):
        return f"a matmul on GPU {name[4:]}"
    return _TITLES.get(name, (name, name))[1]


class RuntimeProbe:
    """The started child; ``finish`` reads its stages to the end (never raises)."""

    def __init__(
        self,
        python: str,
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        stages: Sequence[str] = DEFAULT_STAGES,
        config: Mapping[str, Any] | None = None,
        skip: Mapping[str, str] | None = None,
    ) -> None:
        self.stage_timeout = timeout
        self.total_timeout = timeout * TOTAL_FACTOR
        # Stages not run, each with the reason the report gives (e.g. compile under torchrun).
        self.skipped = {name: why for name, why in (skip or {}).items() if name in stages}
        self.stages = [name for name in stages if name not in self.skipped]
        self.current: str | None = None
        self.heard = False  # any event yet (before the first, the interpreter is starting)
        self.current_started = time.perf_counter()
        # torch.compile's caches go to a directory of ours, removed at the end: --deep
        # leaves nothing behind (so every run compiles cold, ~10 s on a CPU).
        self.scratch = tempfile.mkdtemp(prefix="torch-doctor-deep-")
        child_env = dict(env if env is not None else os.environ)
        child_env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(self.scratch, "inductor")
        child_env["TRITON_CACHE_DIR"] = os.path.join(self.scratch, "triton")
        self.child = _start_child(python, self.total_timeout, child_env)
        self.child.send(json.dumps({"stages": self.stages, "config": dict(config or {})}) + "\n")

    def waiting(self) -> list[str]:
        """For the status line: the stage waited for (the line adds how long)."""
        name = self.current
        if name is None:
            return [] if self.heard else ["the inspected interpreter to start"]
        return [_waiting_words(name)]

    def finish(self, owners: Mapping[str, str] | None = None) -> RuntimeFacts:
        """Read every stage's event; stop the child at a stage's or the total limit."""
        try:
            return self._finish(owners or {})
        finally:
            self.current = None
            self.kill()

    def kill(self) -> None:
        """Stop the child if it still runs (after an error in the doctor, or Ctrl-C)."""
        _stop_child(self.child)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _finish(self, owners: Mapping[str, str]) -> RuntimeFacts:
        if self.child.start_error is not None:
            return RuntimeFacts(
                ran=False,
                error=f"could not start {self.child.argv[0]}: {self.child.start_error}",
                stage_timeout=self.stage_timeout,
                total_timeout=self.total_timeout,
            )
        stream = _EventStream(self.child)
        events: dict[str, dict[str, Any]] = {}
        ended: str | None = None  # how the child ended, when it did not finish
        failed_stage: str | None = None
        done = False
        deadline_total = self.child.started + self.total_timeout
        while not done:
            if self.current is not None:
                deadline = min(deadline_total, self.current_started + self.stage_timeout)
            elif not self.heard:
                # Start-up (site, .pth files, sitecustomize) counts against the first stage.
                deadline = min(deadline_total, self.child.started + self.stage_timeout)
            else:
                deadline = deadline_total
            line = stream.next_line(deadline)
            if line is None:  # limit reached, or the child closed its output
                ended = "exited" if stream.closed else "timed out"
                break
            event = _event(line)
            if event is None:
                continue  # not ours (a library wrote to our stream): ignore
            kind = event.get("event")
            self.heard = True
            if kind == "start":
                self.current = str(event.get("stage"))
                self.current_started = time.perf_counter()
            elif kind == "stage":
                events[str(event.get("stage"))] = event
                self.current = None
            elif kind == "gpus":
                at = self.stages.index("build") + 1 if "build" in self.stages else 0
                gpus = event.get("stages")
                if isinstance(gpus, list):
                    self.stages[at:at] = [str(s) for s in gpus]
            elif kind == "done":
                done = True
        seconds = time.perf_counter() - self.child.started
        failed_stage = self.current
        returncode: int | None = None
        if ended is not None:
            if ended == "timed out":
                _stop_child(self.child)
            returncode = _reap(self.child)
        stderr = stream.stderr_text()
        return _facts(
            self,
            events,
            ended=ended,
            failed_stage=failed_stage,
            returncode=returncode,
            stderr=stderr,
            seconds=seconds,
            owners=owners,
        )


class _EventStream:
    """Lines from the child's stdout as they come; its stderr kept, bounded, meanwhile."""

    def __init__(self, child: Contained) -> None:
        proc = child.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()
        self._out = proc.stdout.fileno()
        self._err = proc.stderr.fileno()
        self._buffer = b""
        self._stderr = bytearray()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._out, selectors.EVENT_READ)
        self._selector.register(self._err, selectors.EVENT_READ)
        self.closed = False

    def next_line(self, deadline: float) -> str | None:
        while b"\n" not in self._buffer:
            if self.closed:
                return None
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            for key, _ in self._selector.select(remaining):
                data = os.read(int(key.fd), 65536)
                if key.fd == self._err:
                    if not data:
                        self._selector.unregister(self._err)
                    self._stderr += data
                    del self._stderr[:-STDERR_LIMIT]
                elif data:
                    self._buffer += data
                    if b"\n" not in self._buffer and len(self._buffer) > LINE_LIMIT:
                        # Not an event of ours (they are short lines): keep memory bounded.
                        self._buffer = b""
                else:
                    self._selector.unregister(self._out)
                    self.closed = True
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace")

    def stderr_text(self) -> str:
        # What is still in the pipe (the child is gone or stopped by now).
        with contextlib.suppress(OSError, ValueError, KeyError):
            while self._selector.select(0.05):
                data = os.read(self._err, 65536)
                if not data:
                    break
                self._stderr += data
                del self._stderr[:-STDERR_LIMIT]
        self._selector.close()
        return self._stderr.decode("utf-8", "replace")


def _event(line: str) -> dict[str, Any] | None:
    """One event of the child, its text cleaned (it quotes torch, libraries and the
    environment: an ESC in an error must not reach the terminal); None when the line is
    not an event: not JSON, not an object, or nested too deep to parse."""
    try:
        event = json.loads(line)
        if not isinstance(event, dict):
            return None
        cleaned: dict[str, Any] = clean_tree(event)
    except (ValueError, RecursionError):
        return None
    return cleaned


# --- The one place that uses doctor/probe/contained.py ------------------------------


def _start_child(python: str, total_timeout: float, env: Mapping[str, str]) -> Contained:
    # -B: no bytecode written into the inspected environment. Its own process group
    # (Contained starts a new session), so Ctrl-C on the terminal reaches only the doctor,
    # which stops the child in `finish`.
    source = CHILD_SOURCE.read_text(encoding="utf-8")
    return Contained(
        [python, "-B", "-c", source],
        timeout=total_timeout,
        env=env,
        open_stdin=True,
    )


def _stop_child(child: Contained) -> None:
    """Kill the child and everything it started, even processes that left its group."""
    proc = child.proc
    if proc is None or proc.poll() is not None:
        return
    import psutil

    with contextlib.suppress(psutil.Error):
        for descendant in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                descendant.kill()
    child.kill()


def _reap(child: Contained) -> int | None:
    proc = child.proc
    if proc is None:
        return None
    try:
        return proc.wait(timeout=5)
    except Exception:  # still there after a kill: say nothing about how it ended
        return None


# --- Events -> facts ----------------------------------------------------------------


def _signal_name(returncode: int | None) -> str | None:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> tuple[str, ...]:
    """The last lines of the child's stderr, cleaned (it is the environment's text)."""
    tail = [clean(line).rstrip() for line in text.strip().splitlines()[-lines:]]
    return tuple(line for line in tail if line.strip())


def _ran_on(name: str, evidence: Mapping[str, Any]) -> str | None:
    if name == "cpu":
        return "cpu"
    if name.startswith("gpu:"):
        return f"cuda:{name[4:]}"
    if name == "compile":
        device = evidence.get("device")
        return str(device) if device else None
    return None


def _facts(
    probe: RuntimeProbe,
    events: Mapping[str, Mapping[str, Any]],
    *,
    ended: str | None,
    failed_stage: str | None,
    returncode: int | None,
    stderr: str,
    seconds: float,
    owners: Mapping[str, str],
) -> RuntimeFacts:
    stages: list[RuntimeStage] = []
    stopped_by: str | None = None  # the stage the child timed out or died in
    for name in probe.stages:
        event = events.get(name)
        title = stage_title(name)
        if event is not None:
            status = str(event.get("status"))
            evidence = _mapping(event.get("evidence"))
            stages.append(
                RuntimeStage(
                    name=name,
                    title=title,
                    status=status,
                    seconds=_number(event.get("seconds")),
                    ran_on=_ran_on(name, evidence) if status != StageStatus.SKIPPED else None,
                    reason=_text(event.get("reason")),
                    error=_text(event.get("error")),
                    traceback_tail=tuple(str(t) for t in _sequence(event.get("traceback"))),
                    warnings=tuple(str(w) for w in _sequence(evidence.get("warnings"))),
                    stderr_tail=_tail(stderr) if status == StageStatus.FAILED else (),
                    # The warnings and mapped libraries have their own fields.
                    evidence={k: v for k, v in evidence.items() if k not in ("warnings", "mapped")},
                )
            )
        elif stopped_by is None and ended is not None and name == failed_stage:
            stopped_by = name
            stages.append(_stopped_stage(probe, name, ended, returncode, stderr))
        elif stopped_by is None and ended is not None and failed_stage is None:
            # It ended between stages (e.g. at exit of the previous one's cleanup).
            stopped_by = name
            stages.append(_stopped_stage(probe, name, ended, returncode, stderr, between=True))
        else:
            why = f"not run: the probe stopped in {stage_title(stopped_by or name)!r}"
            stages.append(
                RuntimeStage(name=name, title=title, status=StageStatus.SKIPPED, reason=why)
            )
    for name, why in probe.skipped.items():
        stages.append(
            RuntimeStage(name=name, title=stage_title(name), status=StageStatus.SKIPPED, reason=why)
        )
    build = _mapping(_mapping(events.get("build")).get("evidence"))
    imported = _mapping(_mapping(events.get("import")).get("evidence"))
    nccl = _mapping(_mapping(events.get("nccl")).get("evidence"))
    mapped = _mapping(_mapping(_mapping(events.get("maps")).get("evidence")).get("mapped"))
    return RuntimeFacts(
        ran=True,
        seconds=round(seconds, 3),
        stage_timeout=probe.stage_timeout,
        total_timeout=probe.total_timeout,
        torch_version=_text(imported.get("version")),
        torch_file=_text(imported.get("file")),
        cuda_version=_text(build.get("cuda")),
        cuda_available=(
            build.get("available") if isinstance(build.get("available"), bool) else None
        ),
        device_count=int(_number(build.get("device_count"))),
        devices=_devices(build.get("devices")),
        nccl_version=_text(nccl.get("version")),
        mapped=tuple(
            MappedLibrary(file_name=str(name), path=str(path), owner=owners.get(str(path)))
            for name, path in sorted(mapped.items())
        ),
        stages=tuple(stages),
    )


def _mapping(value: Any) -> dict[str, Any]:
    """An event's object, or an empty one when the child sent something else."""
    return value if isinstance(value, dict) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _devices(value: Any) -> tuple[RuntimeDevice, ...]:
    """The GPUs of the build stage; an entry the child did not send whole is left out."""
    devices = []
    for item in _sequence(value):
        try:
            devices.append(
                RuntimeDevice(
                    index=int(item["index"]),
                    name=str(item["name"]),
                    capability=str(item["capability"]),
                    memory_bytes=int(item["memory_bytes"]),
                    bf16=bool(item["bf16"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(devices)


def _stopped_stage(
    probe: RuntimeProbe,
    name: str,
    ended: str,
    returncode: int | None,
    stderr: str,
    *,
    between: bool = False,
) -> RuntimeStage:
    title = stage_title(name)
    seconds = round(time.perf_counter() - probe.current_started, 3) if not between else 0.0
    if not probe.heard:  # it never got past start-up (site, .pth files, sitecustomize)
        seconds = round(time.perf_counter() - probe.child.started, 3)
    if ended == "timed out":
        over_total = time.perf_counter() - probe.child.started >= probe.total_timeout - 0.5
        limit = (
            f"the probe's total limit of {probe.total_timeout:g} s (3 × --timeout)"
            if over_total
            else f"{probe.stage_timeout:g} s (--timeout)"
        )
        reason = f"did not finish within {limit}"
        if not probe.heard:
            reason = (
                f"the inspected interpreter did not start within {limit}: a .pth file or "
                "sitecustomize blocks at start-up"
            )
        return RuntimeStage(
            name=name,
            title=title,
            status=StageStatus.TIMED_OUT,
            seconds=seconds,
            reason=f"{reason}; the child and its processes were stopped",
            stderr_tail=_tail(stderr),
        )
    sig = _signal_name(returncode)
    if sig is not None:
        return RuntimeStage(
            name=name,
            title=title,
            status=StageStatus.CRASHED,
            seconds=seconds,
            signal=sig,
            reason=f"the child died with {sig}",
            stderr_tail=_tail(stderr),
        )
    return RuntimeStage(
        name=name,
        title=title,
        status=StageStatus.FAILED,
        seconds=seconds,
        reason=f"the child exited with status {returncode} during this stage",
        error=(_tail(stderr, 1) or (None,))[0],
        stderr_tail=_tail(stderr),
    )


def probe_runtime(
    python: str,
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    owners: Mapping[str, str] | None = None,
) -> RuntimeFacts:
    """Start the child and read it to the end (for callers that need no progress line)."""
    return RuntimeProbe(python, timeout=timeout, env=env).finish(owners)
