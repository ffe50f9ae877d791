"""`torch-doctor fix`: the pyproject.toml edit, through the CLI on real venvs and files."""

from __future__ import annotations

import difflib
import os
import platform
import pty
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from doctor.fix import FixError, apply_blocks
from tests.driver_stub import Driver, DriverStubs
from tests.factory import (
    PLAIN_DEPENDENCIES,
    TORCH_2_14_REQUIRES,
    DoctorRun,
    FakeEnv,
    doctor_env,
    run_doctor,
)
from tests.test_scenarios_wheels import PYPROJECT, _uv_lock

# The real-uv fixtures of the end-to-end test of uv#11945.
from tests.test_uv_lock_metadata import (
    CUDA_WHEELS,
    UV,
    UvProject,
    uv_project,  # noqa: F401  (a fixture, requested by name below)
)
from tests.wheelhouse import WheelSpec, founding_case_wheels

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

# The project file a user would have: comments and layout that fix must keep.
COMMENTED_PYPROJECT = (
    "# Demo project: the comments below must survive `torch-doctor fix`.\n"
    + PYPROJECT.replace('version = "0.1.0"', 'version = "0.1.0"  # bumped by release.sh')
    + "\n[tool.ruff]\n# house style\nline-length = 100\n"
)


def make_lock_project(root: Path, pyproject: str = COMMENTED_PYPROJECT) -> Path:
    """A uv project whose .venv has torch 2.14.1+cu130 and whose uv.lock lacks its CUDA deps."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(pyproject)
    (root / "uv.lock").write_text(_uv_lock(sorted(PLAIN_DEPENDENCIES)))
    FakeEnv.create(root / ".venv").install_healthy_cu130()
    return root


def fix(project: Path, *args: str) -> DoctorRun:
    return run_doctor("fix", *args, cwd=project)


def torch_entries(pyproject: Path) -> list[dict[str, object]]:
    data = tomllib.loads(pyproject.read_text())
    entries = data.get("tool", {}).get("uv", {}).get("dependency-metadata", [])
    return [e for e in entries if e["name"] == "torch"]


def backups(project: Path) -> list[Path]:
    """The backups fix made: in .torch-doctor/backups, never beside pyproject.toml."""
    assert not list(project.glob("pyproject.toml*.bak"))
    return sorted((project / ".torch-doctor" / "backups").glob("pyproject.toml.*.bak"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_lock_project(tmp_path / "demo")


def test_fix_yes_adds_the_metadata_entry_and_keeps_comments_and_a_backup(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    original = pyproject.read_bytes()
    run = fix(project, "--yes")
    assert run.returncode == 0, run.stderr
    text = pyproject.read_text()
    # Only additions: every original line is kept, in order (comments included).
    removed = [
        line
        for line in difflib.ndiff(original.decode().splitlines(), text.splitlines())
        if line.startswith("- ")
    ]
    assert removed == []
    assert "# bumped by release.sh" in text and "# house style" in text
    [entry] = torch_entries(pyproject)
    assert entry["version"] == "2.14.1+cu130"
    assert entry["requires-dist"] == list(TORCH_2_14_REQUIRES)
    [backup] = backups(project)
    assert backup.read_bytes() == original
    assert (project / ".torch-doctor" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert f"kept as {backup}" in run.stdout
    assert "+[[tool.uv.dependency-metadata]]" in run.stdout  # the diff was shown
    assert "uv lock" in run.stdout and "uv sync" in run.stdout
    # The doctor now sees the declaration and asks only for a re-lock.
    after = run_doctor("--format", "json", cwd=project)
    remedies = after.finding("lock-missing-dependencies")["remedies"]
    assert [r["kind"] for r in remedies] == ["shell"]


def test_second_fix_changes_nothing_and_says_so(project: Path) -> None:
    assert fix(project, "--yes").returncode == 0
    pyproject = project / "pyproject.toml"
    first = pyproject.read_bytes()
    made = backups(project)
    run = fix(project, "--yes")
    assert run.returncode == 0, run.stderr
    assert "Nothing to change" in run.stdout or "already up to date" in run.stdout
    assert pyproject.read_bytes() == first
    assert backups(project) == made


def test_existing_entry_for_the_same_version_is_updated_not_duplicated(tmp_path: Path) -> None:
    stale = (
        COMMENTED_PYPROJECT
        + '\n[[tool.uv.dependency-metadata]]\n# written by hand last year\nname = "torch"\n'
        'version = "2.14.1+cu130"\nrequires-dist = ["filelock"]\n'
    )
    project = make_lock_project(tmp_path / "demo", stale)
    run = fix(project, "--yes")
    assert run.returncode == 0, run.stderr
    pyproject = project / "pyproject.toml"
    [entry] = torch_entries(pyproject)
    assert entry["requires-dist"] == list(TORCH_2_14_REQUIRES)
    assert "# written by hand last year" in pyproject.read_text()


def test_unparsable_pyproject_is_refused_and_left_byte_for_byte(tmp_path: Path) -> None:
    broken = COMMENTED_PYPROJECT + "\n[tool.uv\nthis is = = not toml\n"
    project = make_lock_project(tmp_path / "demo", broken)
    before = (project / "pyproject.toml").read_bytes()
    run = fix(project, "--yes")
    assert run.returncode == 2
    assert "not valid TOML" in run.stderr and "untouched" in run.stderr
    assert "Traceback" not in run.stderr
    assert (project / "pyproject.toml").read_bytes() == before
    assert not backups(project)


def test_read_only_pyproject_gives_a_clear_error_and_stays_unchanged(project: Path) -> None:
    # Root writes through file modes, so fix checks the mode itself: a pyproject.toml
    # with no write bit means "hands off" for root too. This test therefore means the
    # same whether or not it runs as root.
    pyproject = project / "pyproject.toml"
    before = pyproject.read_bytes()
    pyproject.chmod(0o444)
    try:
        run = fix(project, "--yes")
    finally:
        pyproject.chmod(0o644)
    assert run.returncode == 2
    assert "read-only" in run.stderr and "nothing was changed" in run.stderr
    assert "Traceback" not in run.stderr
    assert pyproject.read_bytes() == before
    assert not backups(project)


def test_dry_run_shows_the_diff_and_writes_nothing(project: Path) -> None:
    before = (project / "pyproject.toml").read_bytes()
    run = fix(project, "--dry-run")
    assert run.returncode == 0, run.stderr
    assert '+version = "2.14.1+cu130"' in run.stdout
    assert "nothing was written" in run.stdout
    assert (project / "pyproject.toml").read_bytes() == before
    assert not backups(project)
    assert not [p for p in project.iterdir() if p.name.endswith(".tmp")]


def test_without_a_terminal_and_without_yes_fix_refuses(project: Path) -> None:
    before = (project / "pyproject.toml").read_bytes()
    run = fix(project)  # stdin is not a TTY under subprocess
    assert run.returncode == 2
    assert "--yes" in run.stderr and "nothing was changed" in run.stderr
    assert (project / "pyproject.toml").read_bytes() == before


def test_existing_backup_is_not_overwritten_and_the_new_name_is_said(project: Path) -> None:
    directory = project / ".torch-doctor" / "backups"
    directory.mkdir(parents=True)
    # Every name this minute could take is taken by an older backup.
    stamp = time.strftime("%Y%m%dT%H%M", time.gmtime())
    older = [directory / f"pyproject.toml.{stamp}{s:02d}Z.bak" for s in range(60)]
    for path in older:
        path.write_text("an older backup\n")
    run = fix(project, "--yes")
    assert run.returncode == 0, run.stderr
    assert all(p.read_text() == "an older backup\n" for p in older)
    [new] = [p for p in backups(project) if p not in older]
    assert new.name.endswith("-1.bak")
    assert f"kept as {new}" in run.stdout


def test_file_mode_survives_the_atomic_replace(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.chmod(0o640)
    assert fix(project, "--yes").returncode == 0
    assert pyproject.stat().st_mode & 0o777 == 0o640


def test_healthy_project_has_nothing_to_fix(tmp_path: Path) -> None:
    project = tmp_path / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    FakeEnv.create(project / ".venv").install_healthy_cu130()
    run = fix(project, "--yes")
    assert run.returncode == 0, run.stderr
    assert "Nothing to change in pyproject.toml" in run.stdout
    assert (project / "pyproject.toml").read_text() == PYPROJECT


# --- The merge itself, on text (pure) ------------------------------------------------------

INDEX_BLOCK = """\
[[tool.uv.index]]
name = "pytorch-cu128"
url = "https://download.pytorch.org/whl/cu128"
explicit = true

[tool.uv.sources]
torch = [{ index = "pytorch-cu128", marker = "sys_platform == 'linux'" }]
"""


def test_index_and_sources_blocks_merge_into_existing_tables_by_name() -> None:
    user = (
        '[project]\nname = "x"\n\n[[tool.uv.index]]\nname = "pytorch-cu128"\n'
        'url = "https://download.pytorch.org/whl/cu126"  # old\n\n'
        '[tool.uv.sources]\nnumpy = { index = "mirror" }\n'
    )
    out = apply_blocks(user, [INDEX_BLOCK])
    data = tomllib.loads(out)
    assert data["tool"]["uv"]["index"] == [
        {"name": "pytorch-cu128", "url": "https://download.pytorch.org/whl/cu128", "explicit": True}
    ]
    assert data["tool"]["uv"]["sources"]["numpy"] == {"index": "mirror"}
    assert data["tool"]["uv"]["sources"]["torch"][0]["index"] == "pytorch-cu128"
    assert apply_blocks(out, [INDEX_BLOCK]) == out  # idempotent


def test_inline_array_style_is_kept_when_appending() -> None:
    user = '[tool.uv]\ndependency-metadata = [{ name = "other", requires-dist = [] }]\n'
    block = (
        '[[tool.uv.dependency-metadata]]\nname = "torch"\nversion = "2.6.0+cu126"\n'
        'requires-dist = ["filelock"]\n'
    )
    out = apply_blocks(user, [block])
    names = [e["name"] for e in tomllib.loads(out)["tool"]["uv"]["dependency-metadata"]]
    assert names == ["other", "torch"]
    assert "[[tool.uv.dependency-metadata]]" not in out


def test_entry_for_another_version_is_kept_and_a_new_one_added() -> None:
    user = (
        '[[tool.uv.dependency-metadata]]\nname = "torch"\nversion = "2.5.1"\nrequires-dist = []\n'
    )
    block = (
        '[[tool.uv.dependency-metadata]]\nname = "Torch"\nversion = "2.6.0"\nrequires-dist = []\n'
    )
    out = apply_blocks(user, [block])
    versions = [e["version"] for e in tomllib.loads(out)["tool"]["uv"]["dependency-metadata"]]
    assert versions == ["2.5.1", "2.6.0"]


def test_a_table_where_an_array_is_expected_is_refused() -> None:
    user = '[tool.uv.dependency-metadata]\nname = "torch"\n'
    block = '[[tool.uv.dependency-metadata]]\nname = "torch"\nrequires-dist = []\n'
    with pytest.raises(FixError, match="not an array of tables"):
        apply_blocks(user, [block])


def test_unchanged_text_is_returned_as_is_even_with_odd_spacing() -> None:
    user = "[project]\nname   =   'x'\n\n\n"
    assert apply_blocks(user, ["[project]\nname = 'x'\n"]) == user


# --- With the real uv: fix, then `uv lock` records what the lock had lost -------------------


@pytest.fixture
def broken_uv_project(request: pytest.FixtureRequest) -> UvProject:
    """The founding case after `uv lock` and `uv sync`: torch without its nvidia wheels."""
    make: Callable[[Sequence[WheelSpec]], UvProject] = request.getfixturevalue("uv_project")
    project = make(founding_case_wheels())
    project.uv("lock")
    assert project.locked_dependencies("torch").isdisjoint(CUDA_WHEELS)  # uv#11945
    project.uv("sync")
    return project


@pytest.mark.uv
@pytest.mark.timeout(240)
@pytest.mark.skipif(UV is None, reason="uv is not installed")
@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="torch 2.6.0+cu126 declares its nvidia wheels for Linux x86_64 only",
)
def test_fix_then_real_uv_lock_records_every_missing_dependency(
    broken_uv_project: UvProject,
) -> None:
    project = broken_uv_project
    comment = "# The local index replaces PyPI: nothing is resolved from anywhere else."
    assert comment in project.pyproject.read_text()

    run = run_doctor("fix", "--yes", cwd=project.root)
    assert run.returncode == 0, run.stderr
    assert comment in project.pyproject.read_text()
    relock = project.uv("lock")
    assert "warning" not in relock.stderr.lower(), relock.stderr
    assert project.locked_dependencies("torch") >= set(CUDA_WHEELS)

    again = run_doctor("fix", "--yes", cwd=project.root)
    assert again.returncode == 0, again.stderr
    assert "Nothing to change" in again.stdout or "already up to date" in again.stdout


@pytest.mark.uv
@pytest.mark.timeout(240)
@pytest.mark.skipif(UV is None, reason="uv is not installed")
@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="torch 2.6.0+cu126 declares its nvidia wheels for Linux x86_64 only",
)
def test_fix_sync_runs_uv_lock_and_sync_and_installs_the_lost_wheels(
    broken_uv_project: UvProject,
) -> None:
    project = broken_uv_project
    assert UV is not None
    env = dict(project.env, PATH=f"{Path(UV).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = run_doctor("fix", "--yes", "--sync", cwd=project.root, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "$ uv lock" in run.stdout and "$ uv sync" in run.stdout
    assert project.locked_dependencies("torch") >= set(CUDA_WHEELS)
    assert project.installed() >= set(CUDA_WHEELS)


def _fix_on_a_terminal(project: Path, answer: str) -> tuple[int, str]:
    """Run `fix` with a pseudo-terminal as stdin (a real TTY) and type ``answer``."""
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "doctor", "fix"],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=project,
            env=doctor_env(),
            text=True,
        )
        os.write(primary, answer.encode() + b"\n")
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(primary)
        os.close(secondary)
    return proc.returncode, out


def test_on_a_terminal_fix_asks_and_applies_on_yes(project: Path) -> None:
    code, out = _fix_on_a_terminal(project, "y")
    assert code == 0, out
    assert "Apply? [y/N]" in out
    assert len(torch_entries(project / "pyproject.toml")) == 1


def test_on_a_terminal_any_other_answer_changes_nothing(project: Path) -> None:
    before = (project / "pyproject.toml").read_bytes()
    code, out = _fix_on_a_terminal(project, "n")
    assert code == 0, out
    assert "Nothing was changed." in out
    assert (project / "pyproject.toml").read_bytes() == before
    assert not backups(project)


def test_cpu_torch_on_a_gpu_machine_gets_the_cuda_index_and_sources_blocks(
    tmp_path: Path, driver_stubs: DriverStubs
) -> None:
    project = tmp_path / "demo"
    project.mkdir()
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\n'
        'dependencies = ["torch==2.14.1"]  # the model\n'
    )
    env = FakeEnv.create(project / ".venv")
    env.install_torch("2.14.1+cpu", cuda=None, requires_dist=tuple(PLAIN_DEPENDENCIES))
    for name, version in PLAIN_DEPENDENCIES.items():
        env.install(name, version)
    h100 = driver_stubs.env(Driver())  # an H100 on a 580 driver: CUDA 13.0

    run = run_doctor("fix", "--yes", cwd=project, env=h100)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(for cpu-only-torch" in run.stdout
    # What to run next comes from the finding's own remedy, not a generic list.
    assert "  uv sync --reinstall-package torch\n" in run.stdout
    text = pyproject.read_text()
    assert "# the model" in text
    uv = tomllib.loads(text)["tool"]["uv"]
    [index] = uv["index"]
    assert index["url"].startswith("https://download.pytorch.org/whl/cu")
    assert index["explicit"] is True
    assert [s["index"] for s in uv["sources"]["torch"]] == [index["name"]]

    again = run_doctor("fix", "--yes", cwd=project, env=h100)
    assert again.returncode == 0, again.stderr
    assert pyproject.read_text() == text

    # The report's first step is still `torch-doctor fix --sync` (the lock has not moved):
    # with the block in place, --sync runs the re-lock and the sync. It said "already up to
    # date" and "run ... (or use `torch-doctor fix --sync`)", having run nothing.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "uv-calls"
    fake_uv = bin_dir / "uv"
    fake_uv.write_text(f'#!/bin/sh\necho "$PWD: $*" >> {calls}\n')
    fake_uv.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    synced = run_doctor("fix", "--yes", "--sync", cwd=project, env={**h100, "PATH": path})
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert pyproject.read_text() == text
    assert calls.read_text().splitlines() == [
        f"{project}: lock --upgrade-package torch",
        f"{project}: sync --reinstall-package torch",
    ]


def test_package_name_lists_gain_names_and_keep_the_users() -> None:
    # Two extensions to rebuild are two blocks naming one package each: both are added,
    # the user's own entry stays, and applying them again changes nothing.
    user = '[tool.uv]\nno-build-isolation-package = ["vllm"]\n'

    def block(name: str) -> str:
        return (
            f'[tool.uv]\nno-build-isolation-package = ["vllm", "{name}"]\n'
            f'no-binary-package = ["{name}"]\n'
        )

    out = apply_blocks(user, [block("flash-attn"), block("xformers")])
    uv = tomllib.loads(out)["tool"]["uv"]
    assert uv["no-build-isolation-package"] == ["vllm", "flash-attn", "xformers"]
    assert uv["no-binary-package"] == ["flash-attn", "xformers"]
    assert apply_blocks(out, [block("flash-attn"), block("xformers")]) == out


def test_remedies_that_disagree_are_refused() -> None:
    def block(variant: str) -> str:
        return (
            f'[[tool.uv.index]]\nname = "pytorch-{variant}"\n'
            f'url = "https://download.pytorch.org/whl/{variant}"\nexplicit = true\n\n'
            f'[tool.uv.sources]\ntorch = [{{ index = "pytorch-{variant}" }}]\n'
        )

    with pytest.raises(FixError, match="differently"):
        apply_blocks('[project]\nname = "x"\n', [block("cu126"), block("cu130")])


def test_an_environment_that_cannot_be_inspected_is_not_reported_as_nothing_to_fix(
    workdir: Path,
) -> None:
    run = run_doctor("fix", "--yes", "--python", "/bin/false", cwd=workdir)
    assert run.returncode == 2
    assert "could not be inspected" in run.stderr and "Traceback" not in run.stderr


def test_inline_sources_table_is_merged_into_not_replaced() -> None:
    user = '[tool.uv]\nsources = { numpy = { index = "mirror" } }  # mine\n'
    out = apply_blocks(user, ['[tool.uv.sources]\ntorch = [{ index = "pytorch-cu128" }]\n'])
    sources = tomllib.loads(out)["tool"]["uv"]["sources"]
    assert sources == {"numpy": {"index": "mirror"}, "torch": [{"index": "pytorch-cu128"}]}
    assert "# mine" in out
