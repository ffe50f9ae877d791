"""Containment for every child the doctor starts: one small public API.

Loading libraries, calling the driver, running the inspected interpreter or a compiler
can abort, segfault, block for ever, write without end or leave daemons behind; the
doctor must go on, inside its time and memory bounds, and report that as a fact.

    child = start(argv, timeout=5.0)      # its own session and process group, at once
    child.send("a line\\n")               # optional (open_stdin=True)
    outcome = child.finish()              # never raises; never waits past the deadline

The bounds ``finish`` keeps, whatever the child's descendants do:

- **Time.** The deadline is ``start + timeout``. Output is read with ``select`` against it;
  when the direct child has exited, what is already in the pipes is drained and reading
  stops, so a detached grandchild that keeps a pipe open does not extend the wait. On the
  deadline the whole process group is killed, the pipes are closed and reading stops.
- **Memory.** Each stream is kept up to a cap (``stdout_cap``: its head; ``stderr_cap``: its
  tail, where the error is); the bytes beyond are counted and said
  (``Outcome.stdout_dropped``), not kept.
- **Leftovers.** After the child, its process group is killed; processes that left the
  group (``setsid`` daemons) are found by a marker in their inherited environment and
  killed too when they hold the child's pipes or outlived a timeout.

``kill_all()`` stops every child still running; the CLI calls it on SIGINT, SIGTERM and
SIGHUP (``defer_signal()`` first: a signal that comes while a child is being started is
sent again once the child is registered). This module imports only the standard library
(the probes start before anything heavy is imported).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

__all__ = [
    "MARKER_VARIABLE",
    "STDERR_CAP",
    "STDOUT_CAP",
    "Contained",
    "ContainedResult",
    "Outcome",
    "defer_signal",
    "kill_all",
    "run_contained",
    "start",
]

# Enough for the inside probe's report on a venv of thousands of distributions.
STDOUT_CAP = 16 * 1024 * 1024
STDERR_CAP = 256 * 1024
# Every contained child, and what it starts, inherits this variable: it finds daemons
# that left the child's process group.
MARKER_VARIABLE = "TORCH_DOCTOR_CONTAINED"
_CHUNK = 65536
_live: set[Contained] = set()
# Children being started right now, and the stop signals that came meanwhile: a signal
# between the fork and the registration in _live would miss the new child.
_starting = 0
_deferred: list[int] = []


class Outcome(NamedTuple):
    # A NamedTuple, not a dataclass: the probes start before anything imports dataclasses.
    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    start_error: str | None = None
    timeout: float | None = None  # the limit it ran under
    stdout_dropped: int = 0  # bytes beyond the cap, counted and not kept
    stderr_dropped: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.returncode == 0
            and not self.timed_out
            and self.start_error is None
            and not self.stdout_dropped
        )

    @property
    def signal_name(self) -> str | None:
        if self.returncode is not None and self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        return None

    def describe_failure(self) -> str:
        """One line saying how the process failed, for a ProbeFailure reason."""
        if self.start_error is not None:
            return f"could not start {self.argv[0]}: {self.start_error}"
        if self.timed_out:
            limit = self.timeout if self.timeout is not None else self.seconds
            return f"did not finish within {limit:g} s (--timeout) and was stopped" + (
                self._overflow()
            )
        if self.stdout_dropped:
            return "wrote more output than the doctor reads" + self._overflow()
        if self.signal_name is not None:
            return f"crashed with {self.signal_name}" + _tail(self.stderr)
        return f"exited with status {self.returncode}" + _tail(self.stderr)

    def _overflow(self) -> str:
        parts = [
            f"{name}: {dropped} bytes beyond the {cap // 1024} KiB kept"
            for name, dropped, cap in (
                ("stdout", self.stdout_dropped, STDOUT_CAP),
                ("stderr", self.stderr_dropped, STDERR_CAP),
            )
            if dropped
        ]
        return f" ({'; '.join(parts)})" if parts else ""


# The name the probes have used so far.
ContainedResult = Outcome


def _tail(stderr: str, lines: int = 3, cap: int = 2000) -> str:
    """The last lines of stderr for a one-line reason: no control characters, capped."""
    text = "\n".join(stderr.strip().splitlines()[-lines:])
    text = "".join(c for c in text if c.isprintable() or c in "\n\t")
    if len(text) > cap:
        extra = len(text[:-cap].encode("utf-8", "replace"))
        text = f"… {extra} more bytes …{text[-cap:]}"
    return f": {text}" if text else ""


class _Buffer:
    """One stream's bytes up to ``cap``: the head (``keep_tail`` False) or the tail."""

    def __init__(self, cap: int, keep_tail: bool) -> None:
        self.cap = cap
        self.keep_tail = keep_tail
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        if self.keep_tail:
            self.data += chunk
            extra = len(self.data) - self.cap
            if extra > 0:
                del self.data[:extra]
                self.dropped += extra
            return
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _kill_marked(marker: str) -> None:
    """SIGKILL every process that inherited ``marker`` (daemons that left the group)."""
    me = os.getpid()
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class Contained:
    """A started contained process (see the module's docstring); use :func:`start`."""

    _count = 0

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        stdin_text: str | None = None,
        open_stdin: bool = False,
        cwd: str | None = None,
        stdout_cap: int = STDOUT_CAP,
        stderr_cap: int = STDERR_CAP,
    ) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout
        self.started = time.perf_counter()
        self.deadline = self.started + timeout
        self.start_error: str | None = None
        self.output_complete = False  # finish(done=...) saw all the output it needed
        self.outcome: Outcome | None = None
        self._stdin_text = stdin_text
        self._stdout = _Buffer(stdout_cap, keep_tail=False)
        self._stderr = _Buffer(stderr_cap, keep_tail=True)
        Contained._count += 1
        self.marker = f"{os.getpid()}-{Contained._count}"
        child_env = dict(os.environ if env is None else env)
        child_env[MARKER_VARIABLE] = self.marker
        self.proc: subprocess.Popen[bytes] | None = None
        piped = stdin_text is not None or open_stdin
        global _starting
        _starting += 1
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env,
                cwd=cwd,
                start_new_session=True,  # its own session and process group
            )
            _live.add(self)
        except (OSError, ValueError) as exc:
            self.start_error = getattr(exc, "strerror", None) or str(exc)
        finally:
            _starting -= 1
            if _deferred and not _starting:
                # Now that the child is registered, the stop can find it: the signal again.
                signum = _deferred.pop()
                _deferred.clear()
                os.kill(os.getpid(), signum)

    def send(self, text: str) -> None:
        """Write to the process's stdin now (it may already have died: that is no error).

        Only for short lines a reading child takes at once; a child that does not read
        cannot block the doctor for long: the pipe takes 64 KiB."""
        if self.proc is None or self.proc.stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(text.encode("utf-8"))
            self.proc.stdin.flush()

    def finish(
        self, stdin_text: str | None = None, done: Callable[[str], bool] | None = None
    ) -> Outcome:
        """Send the last input, close stdin, read the output, collect the process.

        Never raises and never waits past the deadline. With ``done``: when both streams
        ended and ``done(stdout)`` says the output is complete, the process is not waited
        for (a process that mapped a gigabyte of libraries takes ~20 ms to unmap them after
        closing its output); its exit status is then None. Later calls return the same.
        """
        if self.outcome is not None:
            return self.outcome
        proc = self.proc
        if proc is None:
            self.outcome = Outcome(self.argv, None, "", "", 0.0, start_error=self.start_error)
            return self.outcome
        text = stdin_text if stdin_text is not None else self._stdin_text
        timed_out, held_open = self._pump(proc, text.encode("utf-8") if text else b"", done)
        if timed_out or held_open:
            self._stop(proc, marked=True)
        elif not self.output_complete:
            # Whatever it left in its process group goes with it.
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._close_pipes(proc)
        _live.discard(self)
        self.outcome = Outcome(
            self.argv,
            proc.returncode,
            self._stdout.text(),
            self._stderr.text(),
            time.perf_counter() - self.started,
            timed_out=timed_out,
            timeout=self.timeout if timed_out else None,
            stdout_dropped=self._stdout.dropped,
            stderr_dropped=self._stderr.dropped,
        )
        return self.outcome

    def _pump(
        self, proc: subprocess.Popen[bytes], pending: bytes, done: Callable[[str], bool] | None
    ) -> tuple[bool, bool]:
        """Read (and write stdin) until the child is gone or the deadline; returns
        (timed out, a descendant still held the pipes when the child had exited)."""
        assert proc.stdout is not None and proc.stderr is not None
        buffers = {proc.stdout.fileno(): self._stdout, proc.stderr.fileno(): self._stderr}
        stdin = proc.stdin
        if stdin is not None and not pending:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()
            stdin = None
        exit_fd = _pidfd(proc.pid)
        exited = False
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                selector.register(fd, selectors.EVENT_READ)
            if stdin is not None:
                os.set_blocking(stdin.fileno(), False)
                selector.register(stdin.fileno(), selectors.EVENT_WRITE)
            if exit_fd is not None:
                selector.register(exit_fd, selectors.EVENT_READ)
            try:
                while True:
                    open_streams = [fd for fd in buffers if fd in selector.get_map()]
                    if not exited and proc.poll() is not None:
                        exited = True
                    if exited:
                        # Its output is all in the pipes: take it, then stop reading
                        # (a detached descendant may hold the pipes open for ever).
                        self._drain(selector, buffers)
                        return False, any(fd in selector.get_map() for fd in buffers)
                    if not open_streams:
                        if done is not None and done(self._stdout.text()):
                            self.output_complete = True
                            return False, False
                        return not _wait_until(proc, self.deadline), False
                    remaining = self.deadline - time.perf_counter()
                    if remaining <= 0:
                        return True, False
                    # Without a pidfd, exit is noticed by polling.
                    wait = remaining if exit_fd is not None else min(remaining, 0.05)
                    for key, _ in selector.select(wait):
                        if key.fd == exit_fd:
                            selector.unregister(exit_fd)
                            continue
                        if stdin is not None and key.fd == stdin.fileno():
                            pending = _write_some(stdin.fileno(), pending)
                            if not pending:
                                selector.unregister(key.fd)
                                with contextlib.suppress(OSError, ValueError):
                                    stdin.close()
                                stdin = None
                            continue
                        self._read(selector, key.fd, buffers)
            finally:
                if exit_fd is not None:
                    os.close(exit_fd)

    def _read(
        self, selector: selectors.BaseSelector, fd: int, buffers: Mapping[int, _Buffer]
    ) -> bool:
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if data:
            buffers[fd].add(data)
            return True
        selector.unregister(fd)
        return False

    def _drain(self, selector: selectors.BaseSelector, buffers: Mapping[int, _Buffer]) -> None:
        """Read what is in the pipes now. A descendant that writes on is cut at the
        deadline; what the child wrote is read even when it is collected late."""
        end = max(self.deadline, time.perf_counter() + 0.1)
        while time.perf_counter() < end:
            ready = [key.fd for key, _ in selector.select(0) if key.fd in buffers]
            if not ready:
                return  # all read, or a descendant holds the pipes open
            for fd in ready:
                self._read(selector, fd, buffers)

    def _stop(self, proc: subprocess.Popen[bytes], *, marked: bool) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        if marked:
            _kill_marked(self.marker)
        # Killed, with its pipes about to close: it cannot block on them. A process in
        # uninterruptible sleep may still take a moment: not waited for beyond that.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)

    def _close_pipes(self, proc: subprocess.Popen[bytes]) -> None:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()

    # The names the probes have used so far.
    def wait(self, stdin_text: str | None = None) -> Outcome:
        return self.finish(stdin_text)

    def read_to_end(self, done: Callable[[str], bool]) -> Outcome:
        return self.finish(done=done)

    def running(self) -> bool:
        """Whether the process still works on its answer (safe from another thread)."""
        return (
            self.proc is not None
            and self.outcome is None
            and not self.output_complete
            and self.proc.poll() is None
        )

    def kill(self) -> None:
        """Stop the process and what it started, if it still runs (no longer needed, or the
        doctor failed or was stopped)."""
        _live.discard(self)
        proc = self.proc
        if proc is None or self.output_complete:
            return  # it said all it had to say and is exiting: not worth waiting for
        if self.outcome is not None and proc.returncode is not None:
            return
        self._stop(proc, marked=proc.poll() is None)
        self._close_pipes(proc)


def _pidfd(pid: int) -> int | None:
    """A descriptor readable when ``pid`` exits (Linux 5.3+), else None: then polled."""
    open_pidfd = getattr(os, "pidfd_open", None)
    if open_pidfd is None:
        return None
    try:
        return int(open_pidfd(pid))
    except OSError:
        return None


def _write_some(fd: int, pending: bytes) -> bytes:
    try:
        written = os.write(fd, pending[:_CHUNK])
    except BlockingIOError:
        return pending
    except OSError:
        return b""  # it closed its stdin or died: nothing more to send
    return pending[written:]


def _wait_until(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether the process exited before the deadline (it closed its output already)."""
    try:
        proc.wait(max(0.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        return False
    return True


def start(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdin_text: str | None = None,
    open_stdin: bool = False,
    cwd: str | None = None,
    stdout_cap: int = STDOUT_CAP,
    stderr_cap: int = STDERR_CAP,
) -> Contained:
    """Start ``argv`` contained; collect it with ``.finish()``. Never raises for the
    child's failures (a failure to start is in the outcome)."""
    return Contained(
        argv,
        timeout=timeout,
        env=env,
        stdin_text=stdin_text,
        open_stdin=open_stdin,
        cwd=cwd,
        stdout_cap=stdout_cap,
        stderr_cap=stderr_cap,
    )


def run_contained(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdin_text: str | None = None,
    cwd: str | None = None,
) -> Outcome:
    """Run ``argv`` to its outcome; never raises for the child's failures."""
    return start(argv, timeout=timeout, env=env, stdin_text=stdin_text, cwd=cwd).finish()


def defer_signal(signum: int) -> bool:
    """For a stop signal's handler: True when a child is being started; the signal is
    then sent again once the child is registered, so that :func:`kill_all` finds it."""
    if _starting:
        _deferred.append(signum)
        return True
    return False


def kill_all() -> None:
    """Stop every contained child still running (the doctor is stopping)."""
    for child in list(_live):
        child.kill()
