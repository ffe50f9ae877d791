"""torch-index-not-used: a declared PyTorch index that uv does not take torch from (catalogue 3)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from doctor.checks import Skip
from doctor.facts import Facts
from doctor.facts.project import IndexFacts
from doctor.findings import Severity
from tests.factory import REPO, FakeEnv, run_doctor
from tests.handmade import (
    CheckUnderTest,
    healthy_facts,
    interpreter,
    locked_torch,
    marker_env,
    project,
)
from tests.test_scenarios_wheels import PYPROJECT

CHECK = CheckUnderTest("torch-index-not-used")
CU130 = IndexFacts("pytorch-cu130", "https://download.pytorch.org/whl/cu130", explicit=True)
PYPI = "https://pypi.org/simple"


def with_project(
    *,
    registry: str = PYPI,
    sources: dict[str, Any] | None = None,
    dependencies: Sequence[str] = ("torch==2.14.1",),
    indexes: Sequence[IndexFacts] = (CU130,),
    system: str = "Linux",
    machine: str = "x86_64",
) -> Facts:
    declared = dataclasses.replace(
        project(locked_torch(registry=registry)),
        indexes=tuple(indexes),
        sources=dict(sources or {}),
        declared_dependencies=tuple(dependencies),
    )
    environment = marker_env(machine=machine, system=system)
    return dataclasses.replace(
        healthy_facts(), project=declared, interpreter=interpreter(environment)
    )


def remedies(all_facts: Facts) -> dict[str, str]:
    finding = CHECK.judged(all_facts)
    return {r.kind: r.text for r in finding.remedies}


def test_an_explicit_index_without_a_source_leaves_torch_to_pypi() -> None:
    finding = CHECK.only(with_project())
    assert finding.severity is Severity.WARNING
    assert any(f"uv.lock records torch 2.14.1+cu130 from {PYPI}" in e for e in finding.evidence)
    assert any(
        "no [tool.uv.sources] entry sends torch to pytorch-cu130: uv uses an explicit index "
        "only for the packages pinned to it" in e
        for e in finding.evidence
    )
    texts = remedies(with_project())
    assert "[[tool.uv.index]]" not in texts["toml"]  # it is declared already
    assert (
        'torch = [{index = "pytorch-cu130", marker = "sys_platform == \'linux\'"}]'
        in (texts["toml"])
    )
    assert texts["shell"] == "uv lock --upgrade-package torch\nuv sync\n"


def test_a_source_marker_that_misses_windows_amd64_is_named() -> None:
    sources = {"torch": [{"index": "pytorch-cu130", "marker": "platform_machine == 'x86_64'"}]}
    facts = with_project(sources=sources, system="Windows", machine="AMD64")
    finding = CHECK.only(facts)
    assert any(
        "no marker of torch's [tool.uv.sources] entries holds here (win32/AMD64)" in e
        for e in finding.evidence
    )
    assert "sys_platform == 'win32'" in remedies(facts)["toml"]


def test_a_transitive_torch_ignores_the_sources() -> None:
    sources = {"torch": [{"index": "pytorch-cu130"}]}
    facts = with_project(sources=sources, dependencies=("docling>=2",))
    finding = CHECK.only(facts)
    assert finding.data.torch_is_direct is False
    assert any("astral-sh/uv#8253" in e for e in finding.evidence)
    # The sources are there already: what is left is making torch a direct dependency, a
    # command (it was advice "with the source above", above which nothing was printed,
    # followed by a re-lock that changes nothing while torch stays transitive).
    assert remedies(facts) == {"shell": "uv add torch==2.14.1\n"}
    unrouted = with_project(dependencies=("docling>=2",))
    assert list(remedies(unrouted)) == ["toml", "shell"]
    assert remedies(unrouted)["shell"] == "uv add torch==2.14.1\n"


def test_torch_locked_from_the_declared_index_is_quiet() -> None:
    sources = {"torch": [{"index": "pytorch-cu130"}]}
    assert CHECK.run(with_project(registry=CU130.url + "/", sources=sources)) == []
    assert CHECK.run(with_project(indexes=())) == Skip("pyproject.toml declares no PyTorch index")


def test_torch_from_a_wheel_file_is_not_judged() -> None:
    facts = with_project()
    local = dataclasses.replace(
        facts.project.locked_torch[0],  # type: ignore[union-attr]
        source={"path": "wheels/torch-2.14.1+cu130-cp311-cp311-linux_x86_64.whl"},
    )
    from_file = dataclasses.replace(
        facts,
        project=dataclasses.replace(facts.project, locked_torch=(local,)),  # type: ignore[arg-type]
    )
    assert CHECK.run(from_file) == []


def test_torch_routed_to_a_declared_mirror_is_quiet() -> None:
    mirror = IndexFacts("mirror", "https://artifacts.example/pytorch/cu130", explicit=True)
    sources = {"torch": [{"index": "mirror"}]}
    quiet = with_project(registry=mirror.url, sources=sources, indexes=(CU130, mirror))
    assert CHECK.run(quiet) == []


def test_a_lock_older_than_the_routing_is_told_to_re_lock() -> None:
    sources = {"torch": [{"index": "pytorch-cu130"}]}
    finding = CHECK.only(with_project(sources=sources))
    assert list(finding.data.causes) == [
        "pyproject.toml routes torch to the index now, so uv.lock predates that: re-lock"
    ]
    # The re-lock is the whole fix: no block for what pyproject.toml already says (it was
    # printed again, and made the summary's first step `torch-doctor fix --sync`, which had
    # nothing to write and ran nothing).
    judged = CHECK.judged(with_project(sources=sources))
    assert [r.kind.value for r in judged.remedies] == ["shell"]
    assert judged.remedies[0].text == "uv lock --upgrade-package torch\nuv sync\n"


# --- through the CLI, with a lock uv itself accepts ----------------------------------------

# The scenario project of tests/test_scenarios_wheels.py, with and without torch's source.
UNROUTED = PYPROJECT.split("\n[tool.uv.sources]")[0] + "\n"

LOCK = """\
version = 1
revision = 3
requires-python = ">=3.10"

[[package]]
name = "demo"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [
    {{ name = "torch" }},
]

[package.metadata]
requires-dist = [{{ name = "torch", specifier = "==2.14.1"{index} }}]

[[package]]
name = "torch"
version = "2.14.1"
source = {{ registry = "{registry}" }}
sdist = {{ url = "https://files.example/torch-2.14.1.tar.gz", hash = "sha256:{zeros}", size = 1 }}
"""


def _project(tmp_path: Path, *, routed: bool) -> Path:
    root = tmp_path / "demo"
    root.mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT if routed else UNROUTED)
    index = ', index = "https://download.pytorch.org/whl/cu130"' if routed else ""
    registry = "https://download.pytorch.org/whl/cu130" if routed else PYPI
    (root / "uv.lock").write_text(LOCK.format(index=index, registry=registry, zeros="0" * 64))
    uv = shutil.which("uv") or str(REPO / ".venv" / "bin" / "uv")
    exported = subprocess.run(
        [uv, "export", "--frozen", "--offline", "--no-hashes", "--no-header"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr  # a lock the real uv reads
    assert "torch==2.14.1" in exported.stdout
    return root


def test_cli_reports_torch_locked_from_pypi_despite_the_declared_index(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path: Path
) -> None:
    root = _project(tmp_path, routed=False)
    env = make_env()
    env.install_healthy_cu130()
    run = run_doctor(
        "--python", str(env.root), "--project", str(root), "--format", "json", cwd=workdir
    )
    finding = run.finding(CHECK.id)
    assert finding["data"]["locked_registries"] == [PYPI]
    toml = next(r for r in finding["remedies"] if r["kind"] == "toml")
    assert toml["target"].endswith("demo/pyproject.toml")


def test_cli_is_quiet_when_the_source_routes_torch(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path: Path
) -> None:
    root = _project(tmp_path, routed=True)
    env = make_env()
    env.install_healthy_cu130()
    run = run_doctor(
        "--python", str(env.root), "--project", str(root), "--format", "json", cwd=workdir
    )
    assert CHECK.id not in run.finding_ids()
    assert next(c for c in run.json["checks"] if c["id"] == CHECK.id)["status"] == "passed"
