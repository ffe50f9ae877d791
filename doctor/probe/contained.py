"""Run work that could crash or hang in a separate process, with a timeout.

Loading libraries and calling the driver can abort, segfault or block forever; the
doctor must go on and report that as a fact.
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

__all__ = ["Contained", "ContainedResult", "run_contained"]


class ContainedResult(NamedTuple):
    # A NamedTuple, not a dataclass: the probes start before anything imports dataclasses.
    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    start_error: str | None = None
    timeout: float | None = None  # the limit it ran under

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.start_error is None

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
            return f"did not finish within {limit:g} s (--timeout) and was stopped"
        if self.signal_name is not None:
            return f"crashed with {self.signal_name}" + _tail(self.stderr)
        return f"exited with status {self.returncode}" + _tail(self.stderr)


def _tail(stderr: str, lines: int = 3) -> str:
    text = "\n".join(stderr.strip().splitlines()[-lines:])
    return f": {text}" if text else ""


def _kill_tree(pid: int) -> None:
    import psutil  # only on the rare timeout path: keeps start-up fast

    try:
        parent = psutil.Process(pid)
        children = parent.children(recursive=True)
    except psutil.Error:
        return
    for proc in [*children, parent]:
        with contextlib.suppress(psutil.Error):
            proc.kill()


class Contained:
    """A started contained process; ``wait`` collects it, its timeout counted from the start.

    Starting every probe's process first and waiting on them later lets them run side by
    side. With ``open_stdin`` the process reads lines sent with ``send`` and ``wait``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        stdin_text: str | None = None,
        open_stdin: bool = False,
        cwd: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout
        self.started = time.perf_counter()
        self.start_error: str | None = None
        self.output_complete = False  # read_to_end saw all the output it needed
        self._stdin_text = stdin_text
        self.proc: subprocess.Popen[str] | None = None
        piped = stdin_text is not None or open_stdin
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
            )
        except OSError as exc:
            self.start_error = exc.strerror or str(exc)

    def send(self, text: str) -> None:
        """Write to the process's stdin now (it may already have died: that is no error)."""
        if self.proc is None or self.proc.stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(text)
            self.proc.stdin.flush()

    def wait(self, stdin_text: str | None = None) -> ContainedResult:
        """Send the last input, close stdin, and collect the process; never raises."""
        proc = self.proc
        if proc is None:
            return ContainedResult(self.argv, None, "", "", 0.0, start_error=self.start_error)
        text = stdin_text if stdin_text is not None else self._stdin_text
        if proc.stdin is not None and proc.stdin.closed:
            text = None  # collected before
        remaining = max(0.1, self.timeout - (time.perf_counter() - self.started))
        try:
            stdout, stderr = proc.communicate(text, timeout=remaining)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            return ContainedResult(
                self.argv,
                proc.returncode,
                stdout,
                stderr,
                time.perf_counter() - self.started,
                timed_out=True,
                timeout=self.timeout,
            )
        return ContainedResult(
            self.argv, proc.returncode, stdout, stderr, time.perf_counter() - self.started
        )

    def read_to_end(self, done: Callable[[str], bool]) -> ContainedResult:
        """Read stdout and stderr to their end (stdin is closed first), like ``wait``; but
        when ``done(stdout)`` says the output is complete, do not wait for the process to
        be gone: a process that mapped a gigabyte of libraries takes ~20 ms to unmap them
        after closing its output. Its exit status is then None (reaped later by kill)."""
        proc = self.proc
        if proc is None:
            return ContainedResult(self.argv, None, "", "", 0.0, start_error=self.start_error)
        assert proc.stdout is not None and proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()
        chunks: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
        deadline = self.started + self.timeout
        timed_out = False
        with selectors.DefaultSelector() as selector:
            for fd in chunks:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.perf_counter()
                if remaining <= 0 and not timed_out:
                    timed_out = True  # stop it; what it said so far is kept
                    _kill_tree(proc.pid)
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                events = selector.select(max(remaining, 0.1) if not timed_out else 5.0)
                if timed_out and not events:
                    break  # killed, and something else holds its pipes open
                for key, _ in events:
                    data = os.read(key.fd, 65536)
                    if data:
                        chunks[int(key.fd)].append(data)
                    else:
                        selector.unregister(key.fd)
        stdout = b"".join(chunks[proc.stdout.fileno()]).decode("utf-8", "replace")
        stderr = b"".join(chunks[proc.stderr.fileno()]).decode("utf-8", "replace")
        if timed_out:
            return ContainedResult(
                self.argv,
                proc.wait(),
                stdout,
                stderr,
                time.perf_counter() - self.started,
                timed_out=True,
                timeout=self.timeout,
            )
        returncode = proc.poll()
        self.output_complete = done(stdout)
        if returncode is None and not self.output_complete:
            # It closed its output and did not finish: its exit status says how it died.
            remaining = max(0.1, deadline - time.perf_counter())
            with contextlib.suppress(subprocess.TimeoutExpired):
                returncode = proc.wait(remaining)
        return ContainedResult(
            self.argv, returncode, stdout, stderr, time.perf_counter() - self.started
        )

    def running(self) -> bool:
        """Whether the process still works on its answer (safe from another thread)."""
        return self.proc is not None and not self.output_complete and self.proc.poll() is None

    def kill(self) -> None:
        """Stop the process if it still runs (it is no longer needed, or the doctor failed)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        if self.output_complete:
            return  # it said all it had to say and is exiting: not worth waiting for
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # killed, so no full pipe can block it
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()


def run_contained(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdin_text: str | None = None,
    cwd: str | None = None,
) -> ContainedResult:
    """Run ``argv``; never raises for the child's failures."""
    return Contained(argv, timeout=timeout, env=env, stdin_text=stdin_text, cwd=cwd).wait()
