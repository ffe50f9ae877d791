"""torch-compile-toolchain: triton's ptxas and C compiler (catalogue 22)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from doctor.checks import Skip
from doctor.facts import Facts, NvidiaToolFacts, ToolchainFacts
from doctor.facts.machine import GpuFacts, MachineFacts, NvmlFacts, NvmlStatus
from doctor.findings import Severity
from tests.driver_stub import H100, RTX_5090, Driver, DriverStubs, Gpu
from tests.factory import FakeEnv, run_doctor
from tests.handmade import CheckUnderTest, healthy_facts, interpreter, marker_env

CHECK = CheckUnderTest("torch-compile-toolchain")
BIN = "/venv/site-packages/triton/backends/nvidia/bin"
GB10 = Gpu("NVIDIA GB10", "12.1", 122000)


def gpu(name: str, capability: tuple[int, int], index: int = 0) -> GpuFacts:
    return GpuFacts(index, name, capability)


def tool(name: str, release: str, source: str = "bundled with triton") -> NvidiaToolFacts:
    return NvidiaToolFacts(name, f"{BIN}/{name}", source, release=release)


def with_toolchain(
    gpus: Sequence[GpuFacts],
    tools: Sequence[NvidiaToolFacts] = (tool("ptxas", "12.9"), tool("ptxas-blackwell", "13.3")),
    c_compiler: str | None = "/usr/bin/gcc",
) -> Facts:
    toolchain = ToolchainFacts(
        "/venv/site-packages/triton", c_compiler, "gcc" if c_compiler else None, tuple(tools)
    )
    machine = MachineFacts(nvml=NvmlFacts(status=NvmlStatus.OK, gpus=tuple(gpus)))
    return dataclasses.replace(healthy_facts(), machine=machine, toolchain=toolchain)


def test_no_c_compiler_is_a_warning_with_the_install_hint() -> None:
    facts = with_toolchain([], c_compiler=None)
    finding = CHECK.only(facts)
    assert finding.severity is Severity.WARNING
    assert finding.title.endswith("no C compiler")
    assert any("Failed to find C compiler" in e for e in finding.evidence)
    [remedy] = CHECK.judged(facts).remedies
    assert "apt-get install gcc" in remedy.text


def test_a_ptxas_older_than_the_gpu_is_named_with_the_variable_to_set() -> None:
    # DGX Spark's GB10 (sm_121) needs the ptxas of CUDA 12.9; this triton bundles 12.8.
    facts = with_toolchain(
        [gpu("NVIDIA GB10", (12, 1))],
        tools=(tool("ptxas", "12.8"), tool("ptxas-blackwell", "12.8")),
    )
    finding = CHECK.only(facts)
    assert "sm_121" in finding.title
    assert any(
        "ptxas-blackwell 12.8" in e and "needs the ptxas of CUDA 12.9 or later" in e
        for e in finding.evidence
    )
    env = next(r for r in CHECK.judged(facts).remedies if r.kind == "env")
    assert env.text.startswith("export TRITON_PTXAS_BLACKWELL_PATH=")


def test_the_newer_torch_alternative_is_a_uv_command_only_in_a_uv_project() -> None:
    """The ptxas remedy's summary carried `uv lock --upgrade-package torch --upgrade-package
    triton` inside its prose, for pip venvs too: a uv-project command where there is none,
    and code inside a sentence."""
    from tests.handmade import project

    old_ptxas = (tool("ptxas", "12.8"), tool("ptxas-blackwell", "12.8"))
    pip = dataclasses.replace(
        with_toolchain([gpu("NVIDIA GB10", (12, 1))], tools=old_ptxas),
        distributions=tuple(
            dataclasses.replace(d, installer="pip") for d in healthy_facts().distributions
        ),
    )
    for remedy in CHECK.judged(pip).remedies:
        assert "uv " not in remedy.summary + remedy.text, remedy
    assert [r.kind.value for r in CHECK.judged(pip).remedies] == ["env", "text"]
    uv_project = dataclasses.replace(
        with_toolchain([gpu("NVIDIA GB10", (12, 1))], tools=old_ptxas), project=project()
    )
    env, upgrade = CHECK.judged(uv_project).remedies
    assert "`" not in env.summary
    assert upgrade.kind.value == "shell"
    assert upgrade.text == "uv lock --upgrade-package torch --upgrade-package triton\nuv sync\n"


def test_eight_gpus_of_one_model_are_named_once() -> None:
    """A node of 8 GB10s read "triton cannot compile for sm_121, sm_121, …" and listed the
    same problem 8 times (compare repeats that title for every node of a cluster)."""
    old_ptxas = (tool("ptxas", "12.8"), tool("ptxas-blackwell", "12.8"))
    gpus = [gpu("NVIDIA GB10", (12, 1), index) for index in range(8)]
    finding = CHECK.only(with_toolchain(gpus, tools=old_ptxas))
    assert finding.title == "torch.compile will fail on the GPU: triton cannot compile for sm_121"
    [said] = [e for e in finding.evidence if "sm_121" in e]
    assert said.startswith("GPUs 0-7 (NVIDIA GB10, sm_121): ptxas-blackwell 12.8"), said
    assert [g.index for g in finding.data.gpus] == list(range(8))


def test_without_a_blackwell_ptxas_triton_uses_ptxas_for_every_gpu() -> None:
    facts = with_toolchain(
        [gpu("NVIDIA GeForce RTX 5090", (12, 0))], tools=(tool("ptxas", "12.4"),)
    )
    finding = CHECK.only(facts)
    env = next(r for r in CHECK.judged(facts).remedies if r.kind == "env")
    assert env.text.startswith("export TRITON_PTXAS_PATH=")
    assert [(g.index, g.sm, g.problem) for g in finding.data.gpus] == [
        (0, "sm_120", finding.evidence[0])
    ]


def test_gpus_triton_does_not_support_or_ptxas_dropped_are_named() -> None:
    pascal = CHECK.only(with_toolchain([gpu("NVIDIA GeForce GTX 1080", (6, 1))]))
    assert "compute capability 7.0 and later" in pascal.evidence[0]
    volta = with_toolchain(
        [gpu("Tesla V100", (7, 0))], tools=(tool("ptxas", "13.0", "TRITON_PTXAS_PATH"),)
    )
    assert "no longer compiles for sm_70 (CUDA 12.x was the last)" in CHECK.only(volta).evidence[0]


def test_other_systems_are_not_judged() -> None:
    on_windows = with_toolchain([], c_compiler=None)
    on_windows = dataclasses.replace(
        on_windows, interpreter=interpreter(marker_env(machine="AMD64", system="Windows"))
    )
    assert CHECK.run(on_windows) == Skip("judged on Linux only")


def test_gpus_the_bundled_tools_know_are_quiet() -> None:
    gpus = [gpu("NVIDIA H100", (9, 0)), gpu("NVIDIA GeForce RTX 5090", (12, 0), 1)]
    assert CHECK.run(with_toolchain(gpus)) == []
    assert CHECK.run(dataclasses.replace(with_toolchain(gpus), toolchain=None)) == Skip(
        "triton is not installed"
    )


# --- through the CLI: fake triton tools, stand-in driver ----------------------------------


def _ptxas(path: Path, release: str) -> Path:
    path.write_text(
        "#!/bin/sh\n"
        f'echo "ptxas: NVIDIA (R) Ptx optimizing assembler"\n'
        f'echo "Cuda compilation tools, release {release}, V{release}.86"\n'
    )
    path.chmod(0o755)
    return path


def _with_triton(env: FakeEnv, tmp_path: Path, blackwell: str) -> None:
    env.install(
        "triton",
        "3.8.0",
        files={
            "triton/__init__.py": "",
            "triton/backends/nvidia/bin/ptxas": _ptxas(tmp_path / "ptxas", "12.9"),
            "triton/backends/nvidia/bin/ptxas-blackwell": _ptxas(tmp_path / "ptxasb", blackwell),
        },
    )


@pytest.mark.parametrize(("blackwell", "flagged"), [("12.8", ["sm_121"]), ("13.0", [])])
def test_cli_judges_the_bundled_blackwell_ptxas_against_gb10(
    blackwell: str,
    flagged: list[str],
    make_env: Callable[..., FakeEnv],
    workdir: Path,
    driver_stubs: DriverStubs,
    tmp_path: Path,
) -> None:
    # GB10 (sm_121) needs the ptxas of CUDA 12.9; the H100 is served by ptxas 12.9 either way.
    env = make_env()
    env.install_healthy_cu130(skip=["triton"])
    _with_triton(env, tmp_path, blackwell=blackwell)
    run = run_doctor(
        "--python",
        str(env.root),
        "--format",
        "json",
        cwd=workdir,
        env=driver_stubs.env(Driver(gpus=(H100, GB10))),
    )
    releases = {t["name"]: t["release"] for t in run.json["facts"]["toolchain"]["tools"]}
    assert releases == {"ptxas": "12.9", "ptxas-blackwell": blackwell}
    if flagged:
        assert [g["sm"] for g in run.finding(CHECK.id)["data"]["gpus"]] == flagged
    else:
        assert CHECK.id not in run.finding_ids()


def test_cli_reports_no_c_compiler_on_the_path(
    make_env: Callable[..., FakeEnv], workdir: Path, tmp_path: Path
) -> None:
    if "CC" in os.environ:
        pytest.skip("CC is set in this environment")
    env = make_env()
    env.install_healthy_cu130(skip=["triton"])
    _with_triton(env, tmp_path, blackwell="13.0")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    run = run_doctor(
        "--python", str(env.root), "--format", "json", cwd=workdir, env={"PATH": str(empty)}
    )
    finding = run.finding(CHECK.id)
    assert finding["data"]["c_compiler"] is None
    # No GPU here: the tools were not run, and nothing is judged about them.
    assert run.json["facts"]["toolchain"]["tools_skipped"] == "no GPU is known to compile for"
    ticket = run_doctor(
        "--python", str(env.root), "--format", "markdown", cwd=workdir, env={"PATH": str(empty)}
    )
    assert "| torch.compile | no C compiler · ptxas not run (no GPU is known to compile for) |" in (
        ticket.stdout
    )


@pytest.mark.slow
def test_real_triton_tools_report_their_cuda_releases(
    real_torch_venv: FakeEnv, workdir: Path, driver_stubs: DriverStubs
) -> None:
    # torch 2.14.1's triton 3.8.0 bundles ptxas (CUDA 12.9) and ptxas-blackwell (13.x):
    # they know the H100 and the RTX 5090.
    run = run_doctor(
        "--python",
        str(real_torch_venv.root),
        "--format",
        "json",
        cwd=workdir,
        env=driver_stubs.env(Driver(gpus=(H100, RTX_5090))),
    )
    tools = {t["name"]: t for t in run.json["facts"]["toolchain"]["tools"]}
    assert tools["ptxas"]["release"] == "12.9"
    assert tools["ptxas-blackwell"]["release"].startswith("13.")
    assert CHECK.id not in run.finding_ids()
