"""mixed-cuda-majors: CUDA library wheels of another major beside torch (catalogue 24)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from doctor.checks import Skip
from doctor.findings import Severity
from tests.factory import FakeEnv, run_doctor
from tests.handmade import (
    CheckUnderTest,
    dist,
    facts,
    healthy_distributions,
    torch_build,
    torch_dist,
)

CHECK = CheckUnderTest("mixed-cuda-majors")


def test_a_cuda_12_leftover_beside_a_cuda_13_torch_is_a_warning() -> None:
    leftover = dist("nvidia-cublas-cu12", "12.8.4.1")
    finding = CHECK.only(facts([*healthy_distributions(), leftover]))
    assert finding.severity is Severity.WARNING
    assert "nvidia-cublas-cu12" in finding.title and "CUDA 13" in finding.title
    assert any(
        "nvidia-cublas-cu12 12.8.4.1 is a CUDA 12 wheel, required by no installed package" in e
        for e in finding.evidence
    )
    [remedy] = CHECK.judged(facts([*healthy_distributions(), leftover])).remedies
    assert remedy.kind == "shell"
    assert remedy.text.endswith("uninstall --python /project/.venv/bin/python nvidia-cublas-cu12")


def test_the_package_that_needs_the_other_major_is_named() -> None:
    plugin = dist("jax-cuda12-plugin", "0.7.2", requires_dist=("nvidia-cublas-cu12>=12.1",))
    cublas = dist("nvidia-cublas-cu12", "12.8.4.1")
    finding = CHECK.only(facts([*healthy_distributions(), plugin, cublas]))
    assert finding.data.foreign[0].required_by == ("jax-cuda12-plugin",)
    judged = CHECK.judged(facts([*healthy_distributions(), plugin, cublas]))
    assert any("CUDA 13 variant of jax-cuda12-plugin" in r.text for r in judged.remedies)


def test_unsuffixed_cuda_13_wheels_beside_a_cuda_12_torch_are_foreign() -> None:
    torch = torch_dist("2.6.0+cu126", requires_dist=("nvidia-cublas-cu12==12.6.4.1",))
    own = dist("nvidia-cublas-cu12", "12.6.4.1")
    newer = dist("nvidia-cublas", "13.1.0.3")
    all_facts = facts([torch, own, newer], build=torch_build("2.6.0+cu126", cuda="12.6"))
    finding = CHECK.only(all_facts)
    assert [r.name for r in finding.data.foreign] == ["nvidia-cublas"]
    assert any("CUDA 13 or later wheel" in e for e in finding.evidence)


def test_torchs_own_wheels_and_other_packages_are_quiet() -> None:
    others = [dist("nvidia-ml-py", "13.580.82"), dist("numpy", "2.3.0")]
    assert CHECK.run(facts([*healthy_distributions(), *others])) == []
    cpu = facts([torch_dist("2.14.1+cpu", requires_dist=())], build=torch_build(cuda=None))
    assert CHECK.run(cpu) == Skip("torch is not a CUDA build")


def test_cli_reports_a_leftover_cuda_12_wheel(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    healthy = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    assert CHECK.id not in healthy.finding_ids()
    env.install("nvidia-cudnn-cu12", "9.10.2.21")
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    finding = run.finding(CHECK.id)
    assert finding["data"]["foreign"][0]["name"] == "nvidia-cudnn-cu12"
    uninstall, reinstall = finding["remedies"][0]["text"].splitlines()
    assert uninstall.endswith("nvidia-cudnn-cu12")
    # The real cu12 and cu13 cuDNN wheels write the same files: torch's is put back.
    assert reinstall.endswith("--reinstall --no-deps nvidia-cudnn-cu13==9.24.0.43")
    assert run.returncode == 0  # a warning


def test_only_a_known_wheel_with_or_without_a_cu_suffix_has_a_cuda_major() -> None:
    from doctor.knowledge.cuda_libraries import WheelMajor, wheel_cuda_major

    assert wheel_cuda_major("nvidia-cublas-cu12") == WheelMajor(12, or_later=False)
    assert wheel_cuda_major("nvidia-cuda-runtime-cu11") == WheelMajor(11, or_later=False)
    assert wheel_cuda_major("nvidia-cublas") == WheelMajor(13, or_later=True)
    for other in ("nvidia-cublas-cu", "nvidia-cublas-cuda", "nvidia-cublas-cu12x", "requests"):
        assert wheel_cuda_major(other) is None, other
    assert wheel_cuda_major("nvidia-cuda") is None  # a prefix of a stem is not the wheel
