"""The command line: `check` by default, `list`, `--output` for every format, redaction flags."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from doctor.checks import REGISTRY
from tests.factory import FakeEnv, run_doctor


@pytest.fixture
def broken_env(make_env: Callable[..., FakeEnv]) -> FakeEnv:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-nccl-cu13"])
    return env


def test_no_command_runs_check_with_the_same_result(broken_env: FakeEnv, workdir: Path) -> None:
    bare = run_doctor("--python", str(broken_env.root), "--format", "json", cwd=workdir)
    explicit = run_doctor(
        "check", "--python", str(broken_env.root), "--format", "json", cwd=workdir
    )
    assert bare.returncode == explicit.returncode == 1
    assert bare.finding_ids() == explicit.finding_ids()
    assert "missing-cuda-wheel" in bare.finding_ids()
    assert [c["id"] for c in bare.json["checks"]] == [c["id"] for c in explicit.json["checks"]]


def test_help_lists_every_command(workdir: Path) -> None:
    run = run_doctor("--help", cwd=workdir)
    assert run.returncode == 0
    for command in ("check", "fix", "explain", "list"):
        assert command in run.stdout


def test_list_shows_every_finding_id_with_its_meaning_and_page(workdir: Path) -> None:
    run = run_doctor("list", cwd=workdir)
    assert run.returncode == 0, run.stderr
    for spec in REGISTRY.values():
        assert f"{spec.id}  " in run.stdout
        assert spec.summary in run.stdout
        assert f"docs/findings/{spec.id}.md" in run.stdout


def test_list_as_json_and_markdown(workdir: Path) -> None:
    data = json.loads(run_doctor("list", "--format", "json", cwd=workdir).stdout)
    assert [e["id"] for e in data["findings"]] == list(REGISTRY)
    markdown = run_doctor("list", "--format", "markdown", cwd=workdir).stdout
    rows = [line for line in markdown.splitlines() if line.startswith("| [`")]
    assert len(rows) == len(REGISTRY)


@pytest.mark.parametrize("fmt", ["terminal", "json", "markdown"])
def test_output_writes_every_format_to_the_file_only(
    broken_env: FakeEnv, workdir: Path, fmt: str
) -> None:
    target = workdir / f"report.{fmt}"
    run = run_doctor(
        "--python", str(broken_env.root), "--format", fmt, "--output", str(target), cwd=workdir
    )
    assert run.returncode == 1
    assert run.stdout == ""
    text = target.read_text()
    assert "missing-cuda-wheel" in text
    if fmt == "json":
        assert json.loads(text)["findings"][0]["id"] == "missing-cuda-wheel"


def test_output_to_an_impossible_place_is_a_clear_error(broken_env: FakeEnv, workdir: Path) -> None:
    run = run_doctor(
        "--python",
        str(broken_env.root),
        "--output",
        str(workdir / "no" / "such" / "r.md"),
        cwd=workdir,
    )
    assert run.returncode == 2
    assert "cannot write" in run.stderr and "Traceback" not in run.stderr


def test_redact_and_no_redact_together_are_refused(workdir: Path) -> None:
    run = run_doctor("--redact", "--no-redact", cwd=workdir)
    assert run.returncode == 2
    assert "not allowed with" in run.stderr


def test_json_says_whether_it_was_redacted_and_how_to_reproduce(
    broken_env: FakeEnv, workdir: Path
) -> None:
    redacted = run_doctor("--python", str(broken_env.root), "--format", "json", cwd=workdir).json
    assert redacted["redacted"] is True
    assert redacted["command"].startswith("torch-doctor --python ")
    assert redacted["command"].endswith("--format json")
    kept = run_doctor(
        "--python", str(broken_env.root), "--format", "json", "--no-redact", cwd=workdir
    ).json
    assert kept["redacted"] is False and kept["redactions"] == []
    assert kept["command"] == f"torch-doctor --python {broken_env.root} --format json --no-redact"


def test_a_bug_in_the_doctor_is_one_line_and_exit_2_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import doctor.cli

    def broken(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor.cli, "_list", broken)
    monkeypatch.delenv("TORCH_DOCTOR_DEBUG", raising=False)
    assert doctor.cli.main(["list"]) == 2
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err
    assert "TORCH_DOCTOR_DEBUG=1" in err
    assert "Traceback" not in err
    monkeypatch.setenv("TORCH_DOCTOR_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        doctor.cli.main(["list"])
