"""The progress line: silent on fast runs and off a terminal, a status line on a slow one."""

from __future__ import annotations

import io
import json
import os
import re
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
    terminal = read_terminal(primary)
    assert "torch-doctor: waiting for the NVIDIA driver (NVML, cuInit)" in terminal
    assert json.loads(stdout)["facts"]["machine"]["nvml"]["status"] == "probe-failed"


def read_terminal(primary: int) -> str:
    """All the terminal received (its other end is closed), then closed."""
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
    return b"".join(chunks).decode()


# `import torch` hangs (a .pth file's import hook): the runtime stage waits for it.
HANG_ON_TORCH = """\
import sys, time

class _HangOnTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            time.sleep(300)
        return None

sys.meta_path.insert(0, _HangOnTorch())
"""


def test_deep_names_the_stage_it_waits_for_with_one_time(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    (env.site_packages / "hang_on_torch.py").write_text(HANG_ON_TORCH)
    (env.site_packages / "zz_hang.pth").write_text("import hang_on_torch\n")
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "doctor", "check", "--deep", "--python", str(env.root)),
            *("--no-load", "--timeout", "3", "--format", "json"),
        ],
        cwd=workdir,
        env=doctor_env(),
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    stdout, _ = proc.communicate(timeout=60)
    terminal = read_terminal(primary)
    lines = [line for line in re.split(r"[\r\n]", terminal) if "waiting for" in line]
    assert any("torch-doctor: waiting for importing torch (" in line for line in lines), lines
    # One time per line (the run's), not the stage's and the run's side by side.
    assert all(len(re.findall(r"\(\d+ s\)", line)) == 1 for line in lines), lines
    stage = json.loads(stdout)["facts"]["runtime"]["stages"][0]
    assert (stage["name"], stage["status"]) == ("import", "timed out")
