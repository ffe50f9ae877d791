"""`--format markdown`: the report pasted into a ticket, its structure and its size."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from doctor import __version__
from doctor.checks import CheckResult, CheckSpec, CheckStatus
from doctor.checks.wheels import MissingCudaWheel
from doctor.derive import derive
from doctor.facts import DistributionFacts, Facts, InterpreterFacts, PlatformFacts
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.pipeline import judge
from doctor.render.markdown import MAX_BYTES, cell, code, md, render_markdown
from doctor.report import Report
from tests.driver_stub import H100, RTX_5090, Driver, DriverStubs
from tests.factory import FakeEnv, run_doctor
from tests.test_fix import make_lock_project

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]


def _fences(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)\n```$", text, flags=re.MULTILINE | re.DOTALL)


def _table_rows(text: str, first_cell: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]


def test_lock_scenario_report_has_verdict_findings_facts_and_details(tmp_path: Path) -> None:
    project = make_lock_project(tmp_path / "demo")
    run = run_doctor("--format", "markdown", cwd=project)
    assert run.returncode == 1, run.stderr
    text = run.stdout
    lines = text.splitlines()
    assert lines[0] == "## torch-doctor report"
    assert lines[2].startswith("**❌ error: 1 error")
    assert "torch 2.14.1+cu130" in lines[2]
    headings = [line for line in lines if line.startswith("### ")]
    assert headings[:4] == [
        "### Findings",
        "### What I ran and what I saw",
        "### Environment",
        "### Details",
    ] or headings[:5] == [
        "### Findings",
        "### What I ran and what I saw",
        "### Environment",
        "### CUDA libraries",
        "### Details",
    ]
    assert any(line.startswith("#### ❌ error: `lock-missing-dependencies`") for line in lines)

    # The remedies are fenced with their language; the TOML block parses on its own.
    fences: dict[str, str] = {}
    for lang, body in _fences(text):
        fences.setdefault(lang, body)  # the first of each language: the remedies
    block = tomllib.loads(fences["toml"])
    [entry] = block["tool"]["uv"]["dependency-metadata"]
    assert entry["version"] == "2.14.1+cu130"
    assert fences["bash"].splitlines() == ["uv lock", "uv sync"]

    # The facts table.
    [torch_row] = _table_rows(text, "torch")
    assert "`2.14.1+cu130`" in torch_row and "CUDA 13.0" in torch_row
    [python_row] = _table_rows(text, "Python")
    assert ".venv/bin/python" in python_row
    [project_row] = _table_rows(text, "uv project")
    assert "https://download.pytorch.org/whl/cu130" in project_row
    assert _table_rows(text, "Driver") and _table_rows(text, "GPUs")

    # Collapsible details: balanced, each with a summary, tables inside render (blank line).
    assert text.count("<details>") == text.count("</details>") >= 3
    summaries = re.findall(r"<details>\n<summary>(.*?)</summary>\n\n", text)
    assert len(summaries) == text.count("<details>")
    assert any(s.startswith("All checks (") for s in summaries)
    assert any(s.startswith("Distributions related to torch (") for s in summaries)
    for check_id in ("missing-cuda-wheel", "cpu-only-torch", "lock-missing-dependencies"):
        assert f"| `{check_id}` |" in text

    # Footer: version and the command to reproduce.
    assert f"torch-doctor {__version__}" in lines[-1]
    assert "`torch-doctor --format markdown`" in lines[-1]
    assert len(text.encode()) < MAX_BYTES


def test_the_ticket_carries_what_maintainers_ask_for(tmp_path: Path) -> None:
    project = make_lock_project(tmp_path / "demo")
    secret = "s3cr3t-do-not-post"
    run = run_doctor(
        "--format",
        "markdown",
        cwd=project,
        env={"NCCL_DEBUG": "INFO", "TORCH_CUDA_ARCH_LIST": "9.0", "UV_PUBLISH_TOKEN": secret},
    )
    text = run.stdout
    # The installers: who installed torch, and pip's version when the venv has pip.
    [installers] = _table_rows(text, "Installers")
    assert "torch installed by `uv`" in installers
    # The [tool.uv] tables and torch's uv.lock entry, each a TOML block that parses.
    blocks = [tomllib.loads(body) for lang, body in _fences(text) if lang == "toml"]
    [tool_uv] = [
        b["tool"]["uv"]
        for b in blocks
        if "uv" in b.get("tool", {}) and "dependency-metadata" not in b["tool"]["uv"]
    ]
    assert tool_uv["index"][0]["url"] == "https://download.pytorch.org/whl/cu130"
    [locked] = [b["package"][0] for b in blocks if "package" in b]
    assert (locked["name"], locked["version"]) == ("torch", "2.14.1+cu130")
    assert locked["source"] == {"registry": "https://download.pytorch.org/whl/cu130"}
    # The variables of torch's, CUDA's, NCCL's and uv's families, secrets filtered.
    assert "| `NCCL_DEBUG` | `INFO` |" in text
    assert "| `TORCH_CUDA_ARCH_LIST` | `9.0` |" in text
    assert "`UV_PUBLISH_TOKEN`" in text and secret not in text
    # Room for what only the user knows, empty, to fill in.
    section = text.split("### What I ran and what I saw", 1)[1].split("### ", 1)[0]
    assert [(lang, body.strip()) for lang, body in _fences(section)] == [
        ("bash", ""),
        ("text", ""),
    ]


def test_report_without_findings_says_ok_and_lists_none() -> None:
    facts = Facts(
        interpreter=_interpreter(),
        platform=PlatformFacts("Linux", "x86_64", "6.8.0", "glibc", "2.39"),
    )
    text = render_markdown(Report(context=derive(facts), results=(), findings=()))
    assert "**✅ ok: " in text
    assert "None: every check that could run passed." in text
    assert "#### " not in text


def test_output_file_gets_the_report_and_stdout_stays_empty(tmp_path: Path) -> None:
    project = make_lock_project(tmp_path / "demo")
    target = tmp_path / "report.md"
    run = run_doctor("--format", "markdown", "--output", str(target), cwd=project)
    assert run.returncode == 1
    assert run.stdout == ""
    assert target.read_text().startswith("## torch-doctor report")
    assert f"report written to {target}" in run.stderr


# --- Size caps on hand-built facts ---------------------------------------------------------


def _interpreter(sys_path: tuple[str, ...] = ()) -> InterpreterFacts:
    return InterpreterFacts(
        executable="/venv/bin/python",
        version="3.12.3",
        implementation="CPython",
        prefix="/venv",
        base_prefix="/usr",
        is_venv=True,
        purelib="/venv/lib/python3.12/site-packages",
        platlib="/venv/lib/python3.12/site-packages",
        sys_path=sys_path,
        marker_environment={"platform_system": "Linux", "python_version": "3.12"},
    )


def _huge_report() -> Report:
    interpreter = _interpreter(tuple(f"/opt/extra/path/number/{i}" for i in range(300)))
    distributions = tuple(
        DistributionFacts(
            name=f"nvidia-fake-{i}",
            display_name=f"nvidia-fake-{i}",
            version="1.0",
            location="/venv/lib/python3.12/site-packages",
            metadata_dir=f"/venv/lib/python3.12/site-packages/nvidia_fake_{i}-1.0.dist-info",
        )
        for i in range(2000)
    )
    facts = Facts(
        interpreter=interpreter,
        platform=PlatformFacts("Linux", "x86_64", "6.8.0", "glibc", "2.39"),
        distributions=distributions,
        environment={f"VAR_{i}": "x" * 50 for i in range(20)},
    )
    report = judge(facts)
    noisy = Finding(
        id="missing-cuda-wheel",
        severity=Severity.ERROR,
        title="many",
        detail="Lots of evidence.",
        evidence=tuple(f"line {i}" for i in range(500)),
        remedies=(Remedy(RemedyKind.SHELL, "do it", "echo fix"),),
        data=MissingCudaWheel(missing=(), toolkit_extras_unknown=()),
    )
    return Report(context=report.context, results=report.results, findings=(noisy,))


def test_long_lists_are_cut_with_a_count_and_the_report_stays_under_64_kb() -> None:
    text = render_markdown(_huge_report())
    assert len(text.encode()) < MAX_BYTES
    assert "… and 1940 more distributions (not shown)" in text
    assert "… and 488 more lines of evidence (not shown)" in text
    assert "… and 260 more entries (not shown)" in text


def test_markup_in_facts_cannot_break_the_report() -> None:
    assert md("requires `a<b` and x<y *z*") == r"requires `a<b` and x&lt;y \*z\*"
    assert code("a`b") == "``a`b``"
    assert cell("`a|b`\nc") == r"`a\|b`<br>c"


def test_unredacted_report_says_so_in_its_footer() -> None:
    text = render_markdown(_huge_report(), redactions=None)
    assert "not redacted" in text.splitlines()[-1]


def test_driver_and_gpus_appear_in_the_facts_table(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    driver = driver_stubs.env(Driver("580.95.05", 13000, (H100, RTX_5090)))
    text = run_doctor(
        "--python", str(env.root), "--format", "markdown", cwd=workdir, env=driver
    ).stdout
    assert "driver 580.95.05 (supports CUDA 13.0)" in text.splitlines()[2]
    [driver_row] = _table_rows(text, "Driver")
    assert "580.95.05" in driver_row and "CUDA 13.0" in driver_row
    [gpu0] = _table_rows(text, "GPU 0")
    assert "NVIDIA H100" in gpu0 and "(sm_90)" in gpu0 and "covered by this torch build" in gpu0
    [gpu1] = _table_rows(text, "GPU 1")
    assert "RTX 5090" in gpu1 and "sm_120" in gpu1


def test_the_package_list_carries_numpy_and_transformers_but_not_unrelated_packages(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    # The maintainers' templates ask for numpy and transformers beside torch's family.
    env = make_env()
    env.install_healthy_cu130()
    env.install("numpy", "2.1.3")
    env.install("transformers", "4.57.1")
    env.install("requests", "2.32.3")
    text = run_doctor("--python", str(env.root), "--format", "markdown", cwd=workdir).stdout
    [numpy] = _table_rows(text, "`numpy`")
    assert "`2.1.3`" in numpy
    [transformers] = _table_rows(text, "`transformers`")
    assert "`4.57.1`" in transformers
    assert not _table_rows(text, "`requests`")


@pytest.mark.slow
def test_real_torch_report_lists_the_loaded_cuda_libraries_under_64_kb(
    real_torch_venv: FakeEnv, workdir: Path
) -> None:
    run = run_doctor("--python", str(real_torch_venv.root), "--format", "markdown", cwd=workdir)
    text = run.stdout
    assert len(text.encode()) < MAX_BYTES
    assert "### CUDA libraries" in text
    [cudnn] = _table_rows(text, "`libcudnn.so.9`")
    assert "site-packages/nvidia/cudnn/lib/" in cudnn
    assert "nvidia-cudnn-cu13" in cudnn and cudnn.endswith("| loaded |")
    [torch_row] = _table_rows(text, "torch")
    assert "CUDA 13.0" in torch_row and "installed by pip" in torch_row


# --- Golden file: the whole layout, pinned --------------------------------------------------

GOLDEN = Path(__file__).parent / "golden" / "markdown_report.md"


def _golden_report() -> Report:
    interpreter = _interpreter(("/venv/lib/python3.12/site-packages",))
    torch = DistributionFacts(
        name="torch",
        display_name="torch",
        version="2.6.0+cu126",
        location="/venv/lib/python3.12/site-packages",
        metadata_dir="/venv/lib/python3.12/site-packages/torch-2.6.0+cu126.dist-info",
        installer="uv",
        requires_dist=("filelock", "nvidia-cudnn-cu12==9.5.1.17"),
    )
    filelock = DistributionFacts(
        name="filelock",
        display_name="filelock",
        version="3.16.1",
        location="/venv/lib/python3.12/site-packages",
        metadata_dir="/venv/lib/python3.12/site-packages/filelock-3.16.1.dist-info",
        installer="uv",
    )
    facts = Facts(
        interpreter=interpreter,
        platform=PlatformFacts("Linux", "x86_64", "6.8.0", "glibc", "2.39"),
        distributions=(filelock, torch),
        environment={"LD_LIBRARY_PATH": "/usr/local/cuda/lib64"},
    )
    finding = Finding(
        id="missing-cuda-wheel",
        severity=Severity.ERROR,
        title="1 CUDA wheel required by torch not installed",
        detail="torch needs `nvidia-cudnn-cu12` here; <without it> import fails.",
        evidence=("nvidia-cudnn-cu12==9.5.1.17 (required by torch): not installed",),
        remedies=(
            Remedy(
                RemedyKind.SHELL,
                "install the pinned wheels",
                "uv pip install --python /venv/bin/python nvidia-cudnn-cu12==9.5.1.17",
            ),
            Remedy(
                RemedyKind.TOML,
                "or declare it",
                '[tool.uv]\nfoo = "bar"\n',
                target="/proj/pyproject.toml",
            ),
        ),
        data=MissingCudaWheel(missing=(), toolkit_extras_unknown=()),
    )
    passed = CheckSpec(
        "cpu-only-torch",
        "wheels",
        (Severity.ERROR,),
        "CPU build.",
        "torch built with CUDA",
        lambda facts: [],
        Payload,
    )
    failed = CheckSpec(
        "missing-cuda-wheel",
        "wheels",
        (Severity.ERROR,),
        "Missing.",
        "CUDA wheels installed",
        lambda facts: [],
        Payload,
    )
    skipped = CheckSpec(
        "lock-missing-dependencies",
        "lock",
        (Severity.ERROR,),
        "Lock.",
        "uv.lock records torch",
        lambda facts: [],
        Payload,
    )
    results = (
        CheckResult(failed, CheckStatus.FAILED, findings=(finding,)),
        CheckResult(passed, CheckStatus.PASSED),
        CheckResult(skipped, CheckStatus.SKIPPED, reason="no uv.lock found"),
    )
    return Report(context=derive(facts), results=results, findings=(finding,))


def test_markdown_layout_matches_the_golden_file() -> None:
    text = render_markdown(
        _golden_report(),
        command="torch-doctor --format markdown",
        redactions=("home-directory",),
    ).replace(f"torch-doctor {__version__}", "torch-doctor <version>")
    if os.environ.get("TORCH_DOCTOR_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8"), (
        "the Markdown layout changed; if on purpose, re-run with TORCH_DOCTOR_UPDATE_GOLDEN=1 "
        "and review the diff of tests/golden/markdown_report.md"
    )
