"""Wheel findings, end to end: real venvs, the CLI as a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.requirements import Requirement

from doctor.checks import REGISTRY
from tests.factory import (
    PLAIN_DEPENDENCIES,
    REPO,
    TORCH_2_14_EXTRAS,
    TORCH_2_14_REQUIRES,
    DoctorRun,
    FakeEnv,
    run_doctor,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The findings these scenarios are about. The driver checks judge the machine the tests
# run on (no GPU here, a GPU elsewhere), so their findings are left to their own tests.
WHEEL_AND_LOCK = {
    i
    for i, spec in REGISTRY.items()
    if spec.family in ("wheels", "companions", "cuda-majors", "lock")
}


def wheel_findings(run: DoctorRun) -> list[str]:
    return [i for i in run.finding_ids() if i in WHEEL_AND_LOCK]


def test_healthy_cu130_environment_has_no_findings(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    assert run.returncode == 0, run.stderr
    assert wheel_findings(run) == []
    assert [f["id"] for f in run.json["findings"] if f["severity"] == "error"] == []


def test_missing_cudnn_wheel_is_named_with_its_pin(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    assert run.returncode == 1
    finding = run.finding("missing-cuda-wheel")
    assert finding["severity"] == "error"
    assert any("nvidia-cudnn-cu13==9.24.0.43" in line for line in finding["evidence"])
    assert [m["name"] for m in finding["data"]["missing"]] == ["nvidia-cudnn-cu13"]
    command = finding["remedies"][-1]["text"]
    assert "nvidia-cudnn-cu13==9.24.0.43" in command
    assert str(env.python) in command


def _json_run(env: FakeEnv, workdir: Path) -> DoctorRun:
    return run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)


def test_healthy_environment_passes_or_skips_every_check(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    run = _json_run(env, workdir)
    statuses = {c["id"]: c["status"] for c in run.json["checks"] if c["id"] in WHEEL_AND_LOCK}
    assert set(statuses) == WHEEL_AND_LOCK
    assert set(statuses.values()) <= {"passed", "skipped"}
    # Only these have nothing to judge here: no torchvision or torchaudio, no project.
    skipped = [i for i, s in statuses.items() if s == "skipped"]
    assert skipped == [
        "torch-companion-mismatch",
        "lock-missing-dependencies",
        "torch-index-not-used",
    ]


def test_files_deleted_from_an_installed_nvidia_wheel_are_reported(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    cudnn_libs = {
        f"nvidia/cudnn/lib/libcudnn{part}.so.9": b"\x7fELF stand-in"
        for part in ("", "_ops", "_cnn", "_adv", "_graph")
    }
    env.install("nvidia-cudnn-cu13", "9.24.0.43", files=cudnn_libs)
    assert wheel_findings(_json_run(env, workdir)) == []

    for name in ("libcudnn_cnn.so.9", "libcudnn_adv.so.9"):
        (env.site_packages / "nvidia" / "cudnn" / "lib" / name).unlink()
    run = _json_run(env, workdir)
    assert run.returncode == 1
    assert wheel_findings(run) == ["cuda-wheel-files-missing"]
    finding = run.finding("cuda-wheel-files-missing")
    assert finding["data"]["packages"] == ["nvidia-cudnn-cu13"]
    [evidence] = finding["evidence"]
    assert "2 of" in evidence and "libcudnn_cnn.so.9" in evidence
    # The environment is not a uv project's venv: reinstall with uv pip (uv installed it).
    command = finding["remedies"][-1]["text"]
    assert command.startswith("uv pip install --python")
    # pinned to torch's version: an unpinned reinstall would take the newest on the index
    assert "--reinstall --no-deps nvidia-cudnn-cu13==9.24.0.43" in command


def test_wrong_nccl_version_is_reported_with_the_pinned_reinstall(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-nccl-cu13"])
    env.install("nvidia-nccl-cu13", "2.29.7", installer="pip")
    run = _json_run(env, workdir)
    assert run.returncode == 1
    assert wheel_findings(run) == ["cuda-wheel-version-mismatch"]
    finding = run.finding("cuda-wheel-version-mismatch")
    assert finding["evidence"] == [
        "nvidia-nccl-cu13 2.29.7 installed; torch requires nvidia-nccl-cu13==2.30.7"
    ]
    [remedy] = finding["remedies"]
    assert remedy["kind"] == "shell"
    assert remedy["text"] == (f"uv pip install --python {env.python} nvidia-nccl-cu13==2.30.7")


def test_cpu_build_is_reported_as_information_with_exit_0_without_a_gpu(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    plain = tuple(PLAIN_DEPENDENCIES)
    env.install_torch("2.14.1+cpu", cuda=None, requires_dist=plain)
    for name, version in PLAIN_DEPENDENCIES.items():
        env.install(name, version)
    assert not (env.site_packages / "torch" / "lib" / "libtorch_cuda.so").exists()
    run = _json_run(env, workdir)
    assert wheel_findings(run) == ["cpu-only-torch"]
    finding = run.finding("cpu-only-torch")
    assert "2.14.1+cpu" in finding["title"]
    if finding["data"].get("gpu_present"):
        # On a machine with an NVIDIA GPU a CPU build is a mistake, not a choice.
        assert (finding["severity"], run.returncode) == ("error", 1)
    else:
        assert (finding["severity"], run.returncode) == ("info", 0), run.stdout
        assert run.json["verdict"] == "ok"


def test_torch_absent_is_torch_not_installed_with_exit_1(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install("filelock", "3.16.1")
    run = _json_run(env, workdir)
    assert run.returncode == 1
    assert wheel_findings(run) == ["torch-not-installed"]
    skipped = {c["id"] for c in run.json["checks"] if c["status"] == "skipped"}
    assert "missing-cuda-wheel" in skipped


def test_missing_python_dependency_of_torch_is_reported(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["jinja2"])
    run = _json_run(env, workdir)
    assert run.returncode == 1
    assert wheel_findings(run) == ["missing-torch-dependency"]
    assert run.finding("missing-torch-dependency")["data"]["missing"][0]["name"] == "jinja2"


PYPROJECT = """\
[project]
name = "demo"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = ["torch==2.14.1"]

[[tool.uv.index]]
name = "pytorch-cu130"
url = "https://download.pytorch.org/whl/cu130"
explicit = true

[tool.uv.sources]
torch = [{ index = "pytorch-cu130" }]
"""

_TORCH_WHEEL = (
    "https://download.pytorch.org/whl/cu130/torch-2.14.1%2Bcu130-cp311-cp311-"
    "manylinux_2_28_x86_64.whl"
)


def _uv_lock(torch_dependencies: Sequence[str]) -> str:
    """A uv.lock (lock version 1) recording torch with the given dependency names."""
    deps = "\n".join(f'    {{ name = "{name}" }},' for name in torch_dependencies)
    packages = [
        """[[package]]
name = "demo"
version = "0.1.0"
source = { virtual = "." }
dependencies = [
    { name = "torch" },
]

[package.metadata]
requires-dist = [
    { name = "torch", specifier = "==2.14.1", index = "https://download.pytorch.org/whl/cu130" },
]
""",
        f"""[[package]]
name = "torch"
version = "2.14.1+cu130"
source = {{ registry = "https://download.pytorch.org/whl/cu130" }}
dependencies = [
{deps}
]
wheels = [
    {{ url = "{_TORCH_WHEEL}", hash = "sha256:{"0" * 64}" }},
]
""",
    ]
    for name, version in PLAIN_DEPENDENCIES.items():
        sdist = f"https://files.pythonhosted.org/{name}-{version}.tar.gz"
        packages.append(
            f"""[[package]]
name = "{name}"
version = "{version}"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "{sdist}", hash = "sha256:{"1" * 64}", size = 1000 }}
"""
        )
    header = 'version = 1\nrevision = 3\nrequires-python = ">=3.10"\n\n'
    return header + "\n".join(packages)


def _assert_uv_reads_the_lock(project: Path) -> None:
    """The hand-written lock is one uv accepts (read only: --frozen, --offline)."""
    tomllib.loads((project / "uv.lock").read_text())
    uv = shutil.which("uv") or str(REPO / ".venv" / "bin" / "uv")
    if not Path(uv).exists():
        return
    exported = subprocess.run(
        [uv, "export", "--frozen", "--offline", "--no-hashes", "--no-header"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    assert "torch==2.14.1+cu130" in exported.stdout


def test_uv_project_venv_is_found_and_its_lock_is_missing_nvidia_dependencies(
    tmp_path: Path,
) -> None:
    project = tmp_path / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "uv.lock").write_text(_uv_lock(sorted(PLAIN_DEPENDENCIES)))
    _assert_uv_reads_the_lock(project)
    env = FakeEnv.create(project / ".venv")
    env.install_healthy_cu130()

    # No --python: the doctor finds <project>/.venv from the working directory.
    run = run_doctor("--format", "json", cwd=project)
    assert run.returncode == 1, run.stderr
    facts = run.json["facts"]
    assert Path(facts["interpreter"]["prefix"]).resolve() == (project / ".venv").resolve()
    assert facts["project"]["found_by"] == "venv parent"
    assert wheel_findings(run) == ["lock-missing-dependencies"]

    finding = run.finding("lock-missing-dependencies")
    missing = {Requirement(r).name for r in finding["data"]["missing"]}
    assert missing == {
        "cuda-toolkit",
        "cuda-bindings",
        "nvidia-cudnn-cu13",
        "nvidia-cusparselt-cu13",
        "nvidia-nccl-cu13",
        "nvidia-nvshmem-cu13",
        "triton",
    }
    toml_remedy = finding["remedies"][0]
    assert toml_remedy["kind"] == "toml"
    assert Path(toml_remedy["target"]).resolve() == (project / "pyproject.toml").resolve()
    [entry] = tomllib.loads(toml_remedy["text"])["tool"]["uv"]["dependency-metadata"]
    assert entry["name"] == "torch"
    assert entry["version"] == "2.14.1+cu130"
    assert entry["requires-python"] == ">=3.10"
    assert entry["requires-dist"] == list(TORCH_2_14_REQUIRES)
    assert entry["provides-extras"] == list(TORCH_2_14_EXTRAS)
    # The block pasted into pyproject.toml still parses.
    tomllib.loads(PYPROJECT + "\n" + toml_remedy["text"])


def test_uv_project_lock_recording_the_nvidia_dependencies_is_quiet(tmp_path: Path) -> None:
    project = tmp_path / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    torch_linux = [Requirement(r).name for r in TORCH_2_14_REQUIRES if "extra ==" not in r]
    (project / "uv.lock").write_text(_uv_lock(sorted(torch_linux)))
    env = FakeEnv.create(project / ".venv")
    env.install_healthy_cu130()
    run = run_doctor("--format", "json", cwd=project)
    assert run.returncode == 0, run.stdout
    statuses = {c["id"]: c["status"] for c in run.json["checks"]}
    assert statuses["lock-missing-dependencies"] == "passed"


def test_json_lists_what_torch_requires_here_with_cuda_toolkit_extras_expanded(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13", "nvidia-cufft"])
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    wheels = {w["name"]: w for w in run.json["torch_requirements"]["wheels"]}
    assert wheels["nvidia-cudnn-cu13"]["status"] == "missing"
    assert wheels["nvidia-cudnn-cu13"]["required_by"] == "torch"
    # Brought by cuda-toolkit's extras, named with the extra that pulls them in.
    assert wheels["nvidia-cufft"]["status"] == "missing"
    assert wheels["nvidia-cufft"]["required_by"] == "cuda-toolkit[cufft]"
    assert wheels["nvidia-cublas"]["required_by"] == "cuda-toolkit[cublas,cusolver]"
    assert wheels["nvidia-cublas"]["installed_version"] == "13.1.1.3"
    assert wheels["nvidia-cublas"]["status"] == "ok"
    assert wheels["filelock"]["cuda"] is False
    # Extra-only requirements (optree, …) do not apply without the extra.
    assert "optree" not in wheels


def test_json_has_no_torch_requirements_without_torch(
    make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    assert run.json["torch_requirements"] is None
