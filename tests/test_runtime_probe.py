"""The runtime probe's containment, with this interpreter (no torch in it): fast and real.

The stages themselves run against real torch builds in tests/test_deep.py (slow).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from doctor.probe.runtime import RuntimeProbe
from tests.factory import run_doctor


def test_a_python_without_torch_fails_the_import_stage_and_skips_the_rest() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    facts = RuntimeProbe(sys.executable, timeout=30, env=env).finish()
    stages = {s.name: s for s in facts.stages}
    assert stages["import"].status == "failed"
    assert stages["import"].error == "ModuleNotFoundError: No module named 'torch'"
    assert stages["build"].status == "skipped" and stages["build"].reason == "torch did not import"
    assert stages["gpu"].reason == "torch did not import"
    assert [s.name for s in facts.stages] == [
        "import",
        "build",
        "gpu",
        "maps",
        "cpu",
        "nccl",
        "compile",
    ]


def test_start_up_that_hangs_is_stopped_at_the_stage_limit_and_named(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("import time\ntime.sleep(300)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    probe = RuntimeProbe(sys.executable, timeout=2, env=env)
    # Until the child says anything, the status line waits for its start-up.
    assert probe.waiting() == ["the inspected interpreter to start"]
    started = time.monotonic()
    facts = probe.finish()
    assert time.monotonic() - started < 10  # the stage limit, not 3 × --timeout
    first, *rest = facts.stages
    assert first.name == "import" and first.status == "timed out"
    assert first.reason is not None and "did not start within 2 s" in first.reason
    assert all(
        s.status == "skipped" and "stopped in 'import torch'" in (s.reason or "") for s in rest
    )
    assert probe.child.proc is not None and probe.child.proc.poll() is not None


def wrapper(directory: Path, body: str) -> Path:
    """An interpreter wrapper, as sites put in front of python: ``body`` runs first."""
    path = directory / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_lines_that_are_not_events_are_skipped_and_the_stages_still_reported(
    tmp_path: Path,
) -> None:
    # A wrapper that prints a number, then a line nested past Python's recursion limit,
    # then runs the real interpreter: neither is an event (nor an internal error).
    nested = "[" * 100_000 + "]" * 100_000
    python = wrapper(
        tmp_path,
        f'echo 42\necho "{nested}"\necho \'"just a string"\'\nexec {sys.executable} "$@"',
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    facts = RuntimeProbe(str(python), timeout=30, env=env).finish()
    stages = {s.name: s for s in facts.stages}
    assert stages["import"].error == "ModuleNotFoundError: No module named 'torch'"
    assert stages["build"].reason == "torch did not import"


def test_the_childs_text_is_cleaned_before_any_report_shows_it(tmp_path: Path) -> None:
    """Error, traceback, warnings, device names and stderr come from torch, its libraries
    and the environment: an ESC sequence in them (a window title, a clear screen) is
    removed where the facts are built."""
    events = [
        {"event": "start", "stage": "import"},
        {
            "event": "stage",
            "stage": "import",
            "status": "passed",
            "seconds": 0.1,
            "evidence": {"version": "2.13.0\u001b[2J", "warnings": ["careful\u001b]0;pwned\u0007"]},
        },
        {"event": "start", "stage": "build"},
        {
            "event": "stage",
            "stage": "build",
            "status": "passed",
            "seconds": 0.1,
            "evidence": {
                "cuda": "13.0",
                "available": True,
                "device_count": 1,
                "devices": [
                    {
                        "index": 0,
                        "name": "NVIDIA\u001b[31m H100",
                        "capability": "9.0",
                        "memory_bytes": 1,
                        "bf16": True,
                    }
                ],
            },
        },
        {"event": "start", "stage": "cpu"},
        {
            "event": "stage",
            "stage": "cpu",
            "status": "failed",
            "seconds": 0.1,
            "error": "RuntimeError: \u001b]0;title\u0007bad",
            "traceback": ['  File "x.py", line 1\u001b[2J'],
        },
        {"event": "done"},
    ]
    lines = "".join(f"echo {shlex.quote(json.dumps(e))}\n" for e in events)
    python = wrapper(tmp_path, f"printf 'torch says \\033[2Jhi\\n' >&2\n{lines}")
    facts = RuntimeProbe(str(python), timeout=30, stages=("import", "build", "cpu")).finish()
    stages = {s.name: s for s in facts.stages}
    assert facts.torch_version == "2.13.0[2J"
    assert stages["import"].warnings == ("careful]0;pwned",)
    assert facts.devices[0].name == "NVIDIA[31m H100"
    assert stages["cpu"].error == "RuntimeError: ]0;titlebad"
    assert stages["cpu"].traceback_tail == ('  File "x.py", line 1[2J',)
    assert stages["cpu"].stderr_tail == ("torch says [2Jhi",)
    assert "\x1b" not in repr(facts) and "\x07" not in repr(facts)


def test_a_deep_run_through_a_wrapper_that_prints_keeps_its_report(
    tmp_path: Path, workdir: Path
) -> None:
    """Formerly "internal error: AttributeError" and no report: the wrapper's `42` is a
    JSON number, not an event."""
    python = wrapper(tmp_path, f'echo 42\nexec {sys.executable} "$@"')
    run = run_doctor(
        "check", "--deep", "--python", str(python), "--no-load", "--timeout", "20",
        "--format", "json", cwd=workdir,
    )  # fmt: skip
    assert "internal error" not in run.stderr
    stages = {s["name"]: s for s in run.json["facts"]["runtime"]["stages"]}
    assert stages["import"]["error"] == "ModuleNotFoundError: No module named 'torch'"
    assert run.finding("torch-import-failed")["root"] is None
    assert run.returncode == 1
