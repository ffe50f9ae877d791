"""The terminal report at 80 columns: pinned by a golden file (colour off), and code that
stays whole when it is coloured."""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from doctor.facts import Facts
from doctor.facts.libraries import (
    CudaLibraryFacts,
    LibrariesFacts,
    LoadedLibraryFacts,
    LoadProbeFacts,
)
from doctor.findings import RemedyKind
from doctor.pipeline import judge
from doctor.render.terminal import render_terminal, render_terminal_text
from doctor.report import Report, fix_command
from tests.factory import FakeEnv, run_doctor
from tests.handmade import SITE, facts, healthy_distributions, locked_torch, project

GOLDEN = Path(__file__).parent / "golden" / "terminal_report_80.txt"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _library(
    soname: str, directory: str | None, owner: str | None, version: str | None
) -> CudaLibraryFacts:
    load = LoadedLibraryFacts(
        soname=soname,
        stage="torch global deps",
        requested=soname,
        loaded=directory is not None,
        path=f"{directory}/{soname}" if directory else None,
        owner=owner,
        version=version,
        error=None if directory else f"{soname}: cannot open shared object file",
    )
    return CudaLibraryFacts(soname=soname, needed_by=("libtorch_cuda.so",), load=load)


def founding_case() -> Facts:
    """The founding case: uv.lock recorded torch without its CUDA wheels, so they are
    missing from the venv and the loader cannot find cuDNN."""
    distributions = [d for d in healthy_distributions() if d.name != "nvidia-cudnn-cu13"]
    lock = project(locked_torch(dependencies=[("filelock", None), ("sympy", None)]))
    libraries = LibrariesFacts(
        cuda=(
            _library("libcudart.so.13", f"{SITE}/nvidia/cu13/lib", "nvidia-cuda-runtime", "13.0"),
            _library("libcublasLt.so.13", f"{SITE}/nvidia/cu13/lib", "nvidia-cublas", "13.1"),
            _library("libcudnn.so.9", None, None, None),
            _library("libcudnn_engines_runtime_compiled.so.9", None, None, None),
        ),
        load_probe=LoadProbeFacts(ran=True),
    )
    return dataclasses.replace(facts(distributions, project=lock), libraries=libraries)


COMMAND = "torch-doctor --python /project/.venv --format terminal"


def golden_text(report: Report) -> str:
    return render_terminal_text(report, width=80, command=COMMAND)


def test_terminal_layout_at_80_columns_matches_the_golden_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The version in the header's title, fixed so the file does not change with each release.
    monkeypatch.setattr("doctor.render.terminal.__version__", "0.0.0")
    text = golden_text(judge(founding_case()))
    if os.environ.get("TORCH_DOCTOR_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8"), (
        "the terminal layout changed; if on purpose, re-run with TORCH_DOCTOR_UPDATE_GOLDEN=1 "
        "and review the diff of tests/golden/terminal_report_80.txt"
    )


def test_the_founding_case_ends_with_the_fix_command_for_the_inspected_venv() -> None:
    lines = golden_text(judge(founding_case())).rstrip().splitlines()
    assert lines[-1].strip() == "torch-doctor fix --python /project/.venv --sync"


def test_coloured_code_is_the_same_text_and_is_not_wrapped() -> None:
    report = judge(founding_case())
    buffer = io.StringIO()
    console = Console(file=buffer, width=40, force_terminal=True, color_system="standard")
    render_terminal(report, console, command=COMMAND)
    plain = [line.rstrip() for line in ANSI.sub("", buffer.getvalue()).splitlines()]
    code = [
        remedy for finding in report.roots for remedy in finding.remedies if remedy.kind.is_code
    ]
    assert any(remedy.kind is RemedyKind.TOML for remedy in code)
    for remedy in code:
        wanted = remedy.text.rstrip("\n").split("\n")
        indents = {
            line[: len(line) - len(line.lstrip())] for line in plain if line.strip() == wanted[0]
        }
        assert any(
            [(indent + w).rstrip() for w in wanted]
            == plain[plain.index(indent + wanted[0]) :][: len(wanted)]
            for indent in indents
        ), remedy.text
    assert "\x1b[" in buffer.getvalue()  # it was coloured


def test_passed_checks_are_one_line_unless_verbose() -> None:
    report = judge(founding_case())
    quiet = render_terminal_text(report, width=80)
    assert re.search(r"^✓ \d+ checks passed", quiet, re.MULTILINE)
    verbose = render_terminal_text(report, width=80, verbose=True)
    for result in report.passed:
        # A pass line says what was checked, not the id of the failure it looks for.
        assert f"✓ {result.spec.label}" in verbose
        assert f"✓ {result.spec.id}" not in verbose


def test_fix_command_keeps_only_what_names_the_inspected_environment() -> None:
    assert fix_command("torch-doctor --format json --no-redact") == "torch-doctor fix --sync"
    assert (
        fix_command("torch-doctor explain - --python '/a b/.venv' --project=/p --format markdown")
        == "torch-doctor fix --python '/a b/.venv' --project /p --sync"
    )


def test_libraries_in_a_site_packages_named_through_a_symlink_are_shown_under_site() -> None:
    # The venv was named through a link (purelib as Python says it); library paths are
    # resolved, and so are the site dirs, by the probe: the table says <site>/… either way.
    real_site = "/data/venvs/demo/lib/python3.11/site-packages"
    case = founding_case()
    assert case.interpreter is not None and case.libraries is not None
    interpreter = dataclasses.replace(case.interpreter, real_site_dirs=(real_site,))
    rows = tuple(
        dataclasses.replace(
            row, load=dataclasses.replace(row.load, path=row.load.path.replace(SITE, real_site))
        )
        if row.load is not None and row.load.path
        else row
        for row in case.libraries.cuda
    )
    linked = dataclasses.replace(
        case,
        interpreter=interpreter,
        libraries=dataclasses.replace(case.libraries, cuda=rows),
    )
    text = render_terminal_text(judge(linked), width=100)
    assert "<site>/nvidia/cu13/lib" in text
    assert real_site not in text


def test_a_report_in_a_pipe_has_no_trailing_spaces(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    # rich pads prose lines to the width; in a pipe or a file that is noise (a diff, a paste).
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    run = run_doctor("--python", str(env.root), cwd=workdir)
    assert "missing-cuda-wheel" in run.stdout
    assert [line for line in run.stdout.splitlines() if line != line.rstrip()] == []
    written = workdir / "report.txt"
    run_doctor("--python", str(env.root), "--output", str(written), cwd=workdir)
    text = written.read_text(encoding="utf-8")
    assert "missing-cuda-wheel" in text
    assert [line for line in text.splitlines() if line != line.rstrip()] == []


def test_a_pyproject_block_says_which_file_it_goes_in_as_markdown_does() -> None:
    """A TOML block with no file named left a new user guessing where to paste it
    (Markdown said "(in `…/pyproject.toml`)", the terminal did not)."""
    text = golden_text(judge(founding_case()))
    block = text.index("[[tool.uv.dependency-metadata]]")
    assert "(in\n    /project/pyproject.toml)" in text[:block].rsplit("→", 1)[1]
