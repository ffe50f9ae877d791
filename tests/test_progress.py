"""The progress line: silent on fast runs and off a terminal, a status line on a slow one."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from doctor.probe.progress import ProgressLine
from tests.driver_stub import Driver, DriverStubs
from tests.factory import FakeEnv, doctor_env


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_slow_wait_shows_what_it_waits_for_then_erases_the_line() -> None:
    stream = Terminal()
    with ProgressLine(lambda: ["the NVIDIA driver"], stream=stream, delay=0.05):
        time.sleep(0.4)
    text = stream.getvalue()
    assert "torch-doctor: waiting for the NVIDIA driver (0 s)" in text
    assert text.endswith("\r\x1b[K")


def test_a_fast_run_and_a_file_get_nothing() -> None:
    fast = Terminal()
    with ProgressLine(lambda: ["x"], stream=fast, delay=5.0):
        pass
    assert fast.getvalue() == ""
    log = io.StringIO()  # not a terminal: a ticket, a CI log
    with ProgressLine(lambda: ["x"], stream=log, delay=0.0):
        time.sleep(0.1)
    assert log.getvalue() == ""


def test_cli_on_a_terminal_names_the_hanging_driver(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    argv = [sys.executable, "-m", "doctor", "--python", str(env.root), "--timeout", "3"]
    primary, secondary = os.openpty()  # standard error is a terminal, as for a user
    proc = subprocess.Popen(
        [*argv, "--format", "json"],
        cwd=workdir,
        env=doctor_env(driver_stubs.env(Driver(nvml_init_sleep=60))),
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    stdout, _ = proc.communicate(timeout=60)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:  # the terminal's other end is closed: all was read
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    terminal = b"".join(chunks).decode()
    assert "torch-doctor: waiting for the NVIDIA driver (NVML, cuInit)" in terminal
    assert json.loads(stdout)["facts"]["machine"]["nvml"]["status"] == "probe-failed"
