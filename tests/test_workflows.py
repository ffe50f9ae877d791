"""Remedies speak the workflow that manages the inspected environment: a uv project's venv,
a venv uv made or filled without a project, a pip venv, a conda environment. The same
fault gets that workflow's commands, and no remedy targets a pyproject.toml the inspected
environment does not belong to."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from doctor.derive import Workflow, derive
from doctor.facts import Facts
from doctor.findings import Finding, RemedyKind
from doctor.pipeline import judge
from tests.factory import PLAIN_DEPENDENCIES, TORCH_2_14_WHEELS, FakeEnv, run_doctor
from tests.handmade import facts, healthy_distributions, interpreter, locked_torch, project

PIN = "nvidia-cudnn-cu13==9.24.0.43"
PYTHON = "/project/.venv/bin/python"

UV_PROJECT_PYPROJECT = '[project]\nname = "demo"\nversion = "0"\ndependencies = ["torch"]\n'


def _venv_in_uv_project(tmp_path: Path, venv_name: str) -> FakeEnv:
    """A project depending on torch, not locked, with a venv of that name that uv filled
    (cuDNN's wheel missing)."""
    project = tmp_path / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(UV_PROJECT_PYPROJECT)
    env = FakeEnv.create(project / venv_name)
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    return env


def _as(all_facts: Facts, workflow: Workflow) -> Facts:
    """The same facts, managed the way ``workflow`` manages an environment."""
    installer = "pip" if workflow in (Workflow.PIP_VENV, Workflow.CONDA) else "uv"
    dists = tuple(dataclasses.replace(d, installer=installer) for d in all_facts.distributions)
    interp = dataclasses.replace(
        interpreter(),
        venv_creator="uv" if workflow is Workflow.UV_VENV else "venv",
        conda=workflow is Workflow.CONDA,
    )
    if workflow is not Workflow.UV_PROJECT:
        # The project found from the working directory is another checkout: the venv
        # lives elsewhere, so it is not this environment's project.
        interp = dataclasses.replace(interp, prefix="/elsewhere/venv")
    if all_facts.project is not None:
        all_facts = dataclasses.replace(
            all_facts,
            project=dataclasses.replace(all_facts.project, found_by="working directory"),
        )
    return dataclasses.replace(all_facts, distributions=dists, interpreter=interp)


def _root(all_facts: Facts, finding_id: str) -> Finding[Any]:
    report = judge(all_facts)
    [finding] = [f for f in report.roots if f.id == finding_id]
    return finding


def _missing_cudnn() -> Facts:
    # The lock records cuDNN (the venv just lost it): in a uv project, the lock is right.
    deps = [("nvidia-cudnn-cu13", None), ("cuda-toolkit", None)]
    return facts(
        healthy_distributions(skip=["nvidia-cudnn-cu13"]),
        project=project(locked_torch(dependencies=deps)),
    )


@pytest.mark.parametrize(
    ("workflow", "command"),
    [
        (Workflow.UV_PROJECT, "uv sync"),
        (Workflow.UV_VENV, f"uv pip install --python {PYTHON} {PIN}"),
        (Workflow.PIP_VENV, f"{PYTHON} -m pip install {PIN}"),
        (Workflow.CONDA, f"{PYTHON} -m pip install {PIN}"),
    ],
)
def test_a_missing_wheel_gets_the_command_of_its_workflow(workflow: Workflow, command: str) -> None:
    all_facts = _as(_missing_cudnn(), workflow)
    assert derive(all_facts).workflow is workflow
    finding = _root(all_facts, "missing-cuda-wheel")
    shell = [r.text for r in finding.remedies if r.kind is RemedyKind.SHELL]
    assert shell == [command]
    conda_said = any("conda" in r.summary for r in finding.remedies)
    assert conda_said is (workflow is Workflow.CONDA)


@pytest.mark.parametrize("workflow", [Workflow.UV_VENV, Workflow.PIP_VENV, Workflow.CONDA])
def test_no_remedy_targets_the_pyproject_of_another_checkout(workflow: Workflow) -> None:
    from tests.test_driver_checks import RTX_5090, machine

    cpu = dataclasses.replace(
        _as(_missing_cudnn(), workflow),
        machine=machine((RTX_5090,), driver="570.124.06", cuda=12080),
    )
    cpu = dataclasses.replace(cpu, torch=dataclasses.replace(cpu.torch, cuda=None, lib_files=()))
    report = judge(cpu)
    assert report.roots, "the CPU build on a GPU machine is found"
    for finding in report.findings:
        for remedy in finding.remedies:
            assert remedy.kind is not RemedyKind.TOML, (finding.id, remedy)
            assert "uv lock" not in remedy.text and "uv sync" not in remedy.text, finding.id
    cpu_only = _root(cpu, "cpu-only-torch")
    [install] = [r.text for r in cpu_only.remedies if r.kind is RemedyKind.SHELL]
    assert "--index-url https://download.pytorch.org/whl/cu128" in install
    assert install.startswith("uv pip install" if workflow is Workflow.UV_VENV else PYTHON)


def test_in_its_own_uv_project_the_fix_is_a_pyproject_block_for_that_project() -> None:
    from tests.test_driver_checks import RTX_5090, machine

    own = dataclasses.replace(
        _as(_missing_cudnn(), Workflow.UV_PROJECT),
        machine=machine((RTX_5090,), driver="570.124.06", cuda=12080),
    )
    own = dataclasses.replace(own, torch=dataclasses.replace(own.torch, cuda=None, lib_files=()))
    cpu_only = _root(own, "cpu-only-torch")
    [block] = [r for r in cpu_only.remedies if r.kind is RemedyKind.TOML]
    assert block.target == "/project/pyproject.toml"
    assert "torch-doctor fix" in block.summary


def test_a_project_reached_through_symlinks_owns_its_venv_as_the_probes_resolve_it(
    tmp_path: Path,
) -> None:
    """The probes resolve the paths (on the inspected machine); derive compares what they
    resolved: a venv named through a symlink is still the project's own, and gets `uv sync`."""
    from doctor.probe.interpreter import probe_interpreter
    from doctor.probe.project import probe_project

    real = tmp_path / "real"
    real.mkdir()
    (real / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "0"\n')
    (tmp_path / "link").symlink_to(real)
    FakeEnv.create(real / ".venv")
    # The venv as the user named it (through the link); the project found from the
    # working directory (its real path): only resolved, they are the same tree.
    inside = probe_interpreter(str(tmp_path / "link" / ".venv" / "bin" / "python"))
    assert inside.interpreter is not None
    assert inside.interpreter.prefix == str(tmp_path / "link" / ".venv")
    assert inside.interpreter.real_prefix == str(real / ".venv")
    site = Path(inside.interpreter.purelib)
    assert inside.interpreter.real_site_dirs == (str(real / site.relative_to(tmp_path / "link")),)

    missing = _missing_cudnn()
    owned = dataclasses.replace(
        missing,
        interpreter=inside.interpreter,
        project=dataclasses.replace(
            missing.project, **_probed(probe_project(real, "working directory"))
        ),
    )
    assert derive(owned).workflow is Workflow.UV_PROJECT

    # UV_PROJECT_ENVIRONMENT names the venv relative to the project, through a symlink.
    venvs = tmp_path / "venvs"
    FakeEnv.create(venvs / "main")
    (real / "envs").mkdir()
    (real / "envs" / "main").symlink_to(venvs / "main")
    elsewhere = probe_interpreter(str(venvs / "main" / "bin" / "python"))
    named = probe_project(real, "working directory", "envs/main")
    assert named.real_environment == str(venvs / "main")
    named_env = dataclasses.replace(
        missing,
        interpreter=elsewhere.interpreter,
        environment={"UV_PROJECT_ENVIRONMENT": "envs/main"},
        project=dataclasses.replace(missing.project, **_probed(named)),
    )
    assert derive(named_env).workflow is Workflow.UV_PROJECT
    unnamed = dataclasses.replace(named_env, environment={})
    assert derive(unnamed).workflow is not Workflow.UV_PROJECT


def _probed(project: Any) -> dict[str, Any]:
    """What the project probe found about where the project is (the lock is hand-made)."""
    return {
        "root": project.root,
        "found_by": project.found_by,
        "real_root": project.real_root,
        "real_environment": project.real_environment,
    }


# --- Which venv a uv project owns, on real venvs through the CLI ----------------------

SETUPTOOLS_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mymodel"
version = "0.1.0"
dependencies = ["torch"]
"""


def _shell_remedies(run: Any, finding_id: str) -> list[str]:
    return [r["text"] for r in run.finding(finding_id)["remedies"] if r["kind"] == "shell"]


@pytest.mark.parametrize("venv_name", ["venv", ".venv"])
def test_a_pip_venv_in_a_project_uv_never_locked_gets_pip_commands(
    tmp_path: Path, venv_name: str
) -> None:
    """A setuptools checkout with a venv that `python -m venv` made and pip filled: not a
    uv project's venv. It was told "uv.lock does not record these wheels" (there is no
    uv.lock) and given no command at all."""
    project = tmp_path / "mymodel"
    project.mkdir()
    (project / "pyproject.toml").write_text(SETUPTOOLS_PYPROJECT)
    env = FakeEnv.create(project / venv_name)
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"], installer="pip")
    run = run_doctor("--python", str(env.root), "--format", "json", "--no-redact", cwd=project)
    assert run.json["facts"]["project"]["found_by"] == "venv parent"
    finding = run.finding("missing-cuda-wheel")
    assert _shell_remedies(run, "missing-cuda-wheel") == [f"{env.python} -m pip install {PIN}"]
    assert not any("uv.lock" in r["summary"] + r["text"] for r in finding["remedies"])


def test_a_venv_of_another_name_in_a_uv_project_is_not_the_one_uv_sync_syncs(
    tmp_path: Path,
) -> None:
    """`uv sync` syncs the project's .venv: for a venv/ that uv pip filled, `uv sync` would
    change another venv. Its remedies are `uv pip`'s, for this venv."""
    env = _venv_in_uv_project(tmp_path, "venv")
    run = run_doctor(
        "--python", str(env.root), "--format", "json", "--no-redact", cwd=env.root.parent
    )
    assert _shell_remedies(run, "missing-cuda-wheel") == [
        f"uv pip install --python {env.python} {PIN}"
    ]


def test_a_uv_project_not_locked_yet_installs_the_missing_wheel_with_uv_pip(
    tmp_path: Path,
) -> None:
    """The project's .venv, filled by uv, and no uv.lock: there is no lock to sync from or
    to "make record" the wheels; the install command puts them in."""
    env = _venv_in_uv_project(tmp_path, ".venv")
    run = run_doctor(
        "--python", str(env.root), "--format", "json", "--no-redact", cwd=env.root.parent
    )
    finding = run.finding("missing-cuda-wheel")
    assert _shell_remedies(run, "missing-cuda-wheel") == [
        f"uv pip install --python {env.python} {PIN}"
    ]
    assert not any("uv.lock" in r["summary"] + r["text"] for r in finding["remedies"])


def test_uv_project_commands_start_in_the_project_when_the_doctor_ran_elsewhere(
    tmp_path: Path,
) -> None:
    """`uv sync` acts on the project of the directory it runs in. Inspected with --python
    from another directory, the printed `uv sync` found no pyproject.toml there, or synced
    the project of that directory; the block now starts with `cd` to the inspected one."""
    project = tmp_path / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
        'dependencies = ["torch==2.14.1"]\n'
    )
    # A lock recording torch and every wheel it brings, at the versions installed.
    wheels = {**PLAIN_DEPENDENCIES, **TORCH_2_14_WHEELS}
    registry = 'source = { registry = "https://pypi.org/simple" }'
    lock = [
        'version = 1\nrevision = 3\nrequires-python = ">=3.10"\n',
        '[[package]]\nname = "demo"\nversion = "0.1.0"\nsource = { virtual = "." }\n'
        'dependencies = [{ name = "torch" }]\n',
        f'[[package]]\nname = "torch"\nversion = "2.14.1+cu130"\n{registry}\ndependencies = ['
        + ", ".join(f'{{ name = "{n}" }}' for n in wheels)
        + "]\n",
        *(f'[[package]]\nname = "{n}"\nversion = "{v}"\n{registry}\n' for n, v in wheels.items()),
    ]
    (project / "uv.lock").write_text("\n".join(lock))
    env = FakeEnv.create(project / ".venv")
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    inside = run_doctor("--format", "json", "--no-redact", cwd=project)
    assert _shell_remedies(inside, "missing-cuda-wheel") == ["uv sync"]
    outside = run_doctor(
        "--python", str(env.root), "--format", "json", "--no-redact", cwd=elsewhere
    )
    assert outside.json["facts"]["project"]["cwd_inside"] is False
    assert _shell_remedies(outside, "missing-cuda-wheel") == [f"cd {project}\nuv sync"]
    # A pip command names its interpreter and runs anywhere: no cd for it.
    pip_venv = FakeEnv.create(tmp_path / "pip-venv")
    pip_venv.install_healthy_cu130(skip=["nvidia-cudnn-cu13"], installer="pip")
    pip = run_doctor(
        "--python", str(pip_venv.root), "--format", "json", "--no-redact", cwd=elsewhere
    )
    assert _shell_remedies(pip, "missing-cuda-wheel") == [f"{pip_venv.python} -m pip install {PIN}"]
