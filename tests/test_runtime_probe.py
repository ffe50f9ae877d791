"""The runtime probe's containment, with this interpreter (no torch in it): fast and real.

The stages themselves run against real torch builds in tests/test_deep.py (slow).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from doctor.probe.runtime import RuntimeProbe


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
