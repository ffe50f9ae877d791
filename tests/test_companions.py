"""torch-companion-mismatch: torchvision / torchaudio built for another torch (catalogue 18)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from doctor.checks import Skip
from doctor.facts import DistributionFacts, Facts, to_jsonable
from doctor.facts.project import IndexFacts
from doctor.findings import Severity
from tests.factory import FakeEnv, run_doctor
from tests.handmade import (
    CheckUnderTest,
    dist,
    facts,
    healthy_distributions,
    interpreter,
    marker_env,
    project,
    torch_dist,
)

CHECK = CheckUnderTest("torch-companion-mismatch")


def with_companions(
    *companions: DistributionFacts, torch_version: str = "2.14.1+cu130", machine: str = "x86_64"
) -> Facts:
    dists = [d for d in healthy_distributions() if d.name != "torch"]
    built = facts([torch_dist(torch_version), *dists, *companions])
    return dataclasses.replace(built, interpreter=interpreter(marker_env(machine=machine)))


def torchvision(version: str, torch_pin: str) -> DistributionFacts:
    return dist("torchvision", version, requires_dist=("numpy", f"torch=={torch_pin}"))


def test_a_torchvision_pinned_to_another_torch_release_is_an_error() -> None:
    finding = CHECK.only(with_companions(torchvision("0.27.1+cu130", "2.12.1")))
    assert finding.severity is Severity.ERROR
    assert (
        "torchvision 0.27.1+cu130 requires torch==2.12.1, but torch 2.14.1+cu130"
        in (finding.evidence[0])
    )
    assert to_jsonable(finding.data.companions) == [
        {
            "name": "torchvision",
            "version": "0.27.1+cu130",
            "torch_requirement": "==2.12.1",
            "variant": "cu130",
        }
    ]


def test_a_cpu_torchvision_beside_a_cuda_torch_is_an_error() -> None:
    finding = CHECK.only(with_companions(torchvision("0.29.1+cpu", "2.14.1")))
    assert finding.severity is Severity.ERROR
    assert any("is a cpu build (local tag)" in e and "is cu130" in e for e in finding.evidence)


def test_the_same_cuda_major_in_another_minor_is_a_warning() -> None:
    finding = CHECK.only(
        with_companions(torchvision("0.26.0+cu126", "2.11.0"), torch_version="2.11.0+cu128")
    )
    assert finding.severity is Severity.WARNING


def test_a_torchvision_from_pypi_carries_pypis_variant_for_its_release() -> None:
    # torch from the cu126 index, torchvision from PyPI, where 2.11's wheels are cu130.
    from_pypi = torchvision("0.26.0", "2.11.0")
    finding = CHECK.only(with_companions(from_pypi, torch_version="2.11.0+cu126"))
    assert finding.severity is Severity.ERROR
    assert any(
        "cu130 build (no local tag: PyPI's variant for torch 2.11)" in e for e in (finding.evidence)
    )
    # PyPI's CUDA variants are x86_64 facts: on aarch64 the untagged wheel is not judged.
    assert (
        CHECK.run(with_companions(from_pypi, torch_version="2.11.0+cu126", machine="aarch64")) == []
    )


def test_matching_torchvision_and_torchaudio_are_quiet() -> None:
    torchaudio = dist("torchaudio", "2.14.1+cu130", requires_dist=("torch==2.14.1",))
    assert CHECK.run(with_companions(torchvision("0.29.1+cu130", "2.14.1"), torchaudio)) == []
    assert isinstance(CHECK.run(with_companions()), Skip)


def in_project(facts: Facts, **changes: object) -> Facts:
    """The same facts, inspected as the venv of a uv project (pyproject changes applied)."""
    return dataclasses.replace(
        facts,
        project=dataclasses.replace(project(), **changes),
        interpreter=dataclasses.replace(facts.interpreter, prefix="/project/.venv"),  # type: ignore[arg-type]
    )


def test_in_a_project_the_companion_follows_torchs_declared_source() -> None:
    index = IndexFacts("pytorch-cu130", "https://download.pytorch.org/whl/cu130", explicit=True)
    facts = in_project(
        with_companions(torchvision("0.29.1+cpu", "2.14.1")),
        sources={"torch": [{"index": "pytorch-cu130"}]},
        indexes=(index,),
    )
    finding = CHECK.judged(facts)
    assert any(
        'gives torch the source {index = "pytorch-cu130"}, torchvision none: uv takes it from PyPI'
        in e
        for e in finding.evidence
    )
    toml = next(r for r in finding.remedies if r.kind == "toml")
    # torch is routed already: only torchvision's entry, no second [[tool.uv.index]].
    assert toml.text == (
        "[tool.uv.sources]\n"
        'torchvision = [{index = "pytorch-cu130", marker = "sys_platform == \'linux\'"}]\n'
    )
    shell = next(r for r in finding.remedies if r.kind == "shell")
    assert "uv lock --upgrade-package torch --upgrade-package torchvision" in shell.text


def test_in_a_project_without_torchs_index_the_block_declares_it() -> None:
    finding = CHECK.judged(in_project(with_companions(torchvision("0.29.1+cpu", "2.14.1"))))
    toml = next(r for r in finding.remedies if r.kind == "toml")
    assert 'url = "https://download.pytorch.org/whl/cu130"' in toml.text
    assert "torch = [" in toml.text and "torchvision = [" in toml.text


def test_outside_a_project_the_paired_torchvision_is_installed_from_torchs_index() -> None:
    known = with_companions(torchvision("0.27.1", "2.12.1"), torch_version="2.11.0+cu126")
    command = CHECK.judged(known).remedies[0].text
    assert "torchvision==0.26.*" in command
    assert "--index-url https://download.pytorch.org/whl/cu126 " in command
    # torch 2.14's torchvision (0.29, read from the real wheel) is in the table now.
    paired = CHECK.judged(with_companions(torchvision("0.29.1+cpu", "2.14.1")))
    assert "torchvision==0.29.*" in paired.remedies[0].text
    # No torchvision release recorded for a torch: words, not an unpinned install.
    unknown = with_companions(torchvision("0.99.0+cpu", "2.99.0"), torch_version="2.99.0+cu130")
    remedy = CHECK.judged(unknown).remedies[0]
    assert remedy.kind == "text" and "requires torch==2.99.0" in remedy.text


# --- through the CLI ---------------------------------------------------------------------


def test_cli_reports_a_cpu_torchvision_beside_the_cuda_torch(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    env.install("torchvision", "0.29.1+cpu", requires_dist=("torch==2.14.1",))
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    finding = run.finding(CHECK.id)
    assert finding["severity"] == "error"
    assert finding["data"]["torch_variant"] == "cu130"
    assert run.returncode == 1


def test_cli_is_quiet_for_the_matching_torchvision(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    env.install("torchvision", "0.29.1+cu130", requires_dist=("torch==2.14.1",))
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    assert CHECK.id not in run.finding_ids()
    check = next(c for c in run.json["checks"] if c["id"] == CHECK.id)
    assert check["status"] == "passed"


def test_explain_confirms_the_torchvision_operator_error_with_this_check(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    env.install("torchvision", "0.27.1+cu130", requires_dist=("torch==2.12.1",))
    error = "RuntimeError: operator torchvision::nms does not exist"
    run = run_doctor("explain", error, "--python", str(env.root), "--format", "json", cwd=workdir)
    explained = run.json["explain"]
    assert [r["id"] for r in explained["recognised"]] == ["torchvision-operator-missing"]
    assert explained["confirmed"] == [CHECK.id]
