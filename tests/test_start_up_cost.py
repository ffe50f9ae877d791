"""What the default run leaves unimported: start-up time is a feature of a doctor people run often.

Each case renders a report in a fresh interpreter and looks at sys.modules afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RENDER = """
import json, sys
sys.path.insert(0, {repo!r})
from doctor.pipeline import judge
from doctor.render.output import prepare, render_text
from tests.handmade import facts, healthy_distributions, healthy_facts

all_facts = healthy_facts() if {healthy} else facts(healthy_distributions(skip=["nvidia-cublas"]))
report = judge(all_facts)
text = render_text(prepare(report, "torch-doctor", redacted=False), "terminal")
print(json.dumps({{"modules": sorted(sys.modules), "text": text}}))
"""


def render_in_fresh_interpreter(*, healthy: bool) -> tuple[set[str], str]:
    code = RENDER.format(repo=str(REPO), healthy=healthy)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    out = json.loads(proc.stdout)
    return set(out["modules"]), out["text"]


def test_healthy_terminal_report_imports_no_highlighter_and_no_redaction() -> None:
    modules, text = render_in_fresh_interpreter(healthy=True)
    assert "no problems found" in text
    # pygments (via rich.syntax) is for remedy code blocks; a healthy report has none.
    assert not {"rich.syntax", "pygments"} & modules
    # The terminal report is not redacted by default, and its cells are not markup.
    assert "doctor.redact" not in modules
    assert "rich._emoji_codes" not in modules
    # Knowledge files are read by path, not through importlib.resources.
    assert "importlib.resources" not in modules


def test_report_with_a_remedy_command_still_shows_it() -> None:
    modules, text = render_in_fresh_interpreter(healthy=False)
    assert "missing-cuda-wheel" in text
    assert "nvidia-cublas==13.1.1.3.*" in text
    # Plain text (a pipe, a file, NO_COLOR): the code is shown, and the highlighter, which
    # would only add colour, is not imported.
    assert not {"rich.syntax", "pygments"} & modules


def test_what_runs_before_the_probes_start_stays_light() -> None:
    """The CLI and the probe starter are imported before the probe processes start (the
    load probe is the run's critical path): none of the facts, findings, checks or rich."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(REPO)!r})\n"
        "import doctor.cli, doctor.probe.start, doctor.probe.target\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    modules = set(json.loads(proc.stdout))
    heavy = {"doctor.findings", "doctor.facts", "doctor.checks", "doctor.report", "rich"}
    assert not heavy & modules
    assert "dataclasses" not in modules  # ~160 classes built at import are the heavy part
