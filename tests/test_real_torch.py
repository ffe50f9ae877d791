"""Against the real torch 2.14.1 CUDA-13 build (slow), and proof that torch is never imported.

The real venv is shared and cached (tests/conftest.py `real_torch_venv`): a test that
changes it puts it back in a `finally`, and pip takes the wheel from this machine's disk.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factory import DoctorRun, FakeEnv, run_doctor

CUDNN = "nvidia-cudnn-cu13"
CUDNN_PIN = "9.24.0.43"

# Imported by every Python process whose environment carries PYTHONPATH=<this dir>: the
# doctor, the inside probe run by the inspected interpreter, and any contained probe. It
# leaves one file per process that loaded it, and another if anything imports torch.
SPY = """\
import os
import sys

_MARKERS = os.environ["TORCH_DOCTOR_TEST_IMPORT_MARKERS"]
with open(os.path.join(_MARKERS, "loaded-%d" % os.getpid()), "w") as _f:
    _f.write(sys.executable)


class _TorchImportSpy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            with open(os.path.join(_MARKERS, "torch-imported-%d" % os.getpid()), "w") as f:
                f.write("%s imported %s" % (sys.executable, name))
        return None


sys.meta_path.insert(0, _TorchImportSpy())
"""


def pip(venv: FakeEnv, *args: str) -> None:
    subprocess.run(
        [str(venv.python), "-m", "pip", "--disable-pip-version-check", "--quiet", *args],
        check=True,
        timeout=600,
    )


def spied_run(venv: FakeEnv, tmp_path: Path, *args: str) -> tuple[DoctorRun, Path]:
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    (spy_dir / "sitecustomize.py").write_text(SPY)
    markers = tmp_path / "markers"
    markers.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    run = run_doctor(
        "--python",
        str(venv.root),
        *args,
        cwd=work,
        env={"PYTHONPATH": str(spy_dir), "TORCH_DOCTOR_TEST_IMPORT_MARKERS": str(markers)},
    )
    return run, markers


def assert_torch_never_imported(venv: FakeEnv, markers: Path) -> None:
    loaded_by = {p.read_text() for p in markers.glob("loaded-*")}
    # The spy must have been active inside the inspected interpreter, or the test proves nothing.
    assert any(Path(exe).parent == venv.python.parent for exe in loaded_by), loaded_by
    imported = [p.read_text() for p in markers.glob("torch-imported-*")]
    assert imported == []


def test_fake_torch_that_refuses_import_leaves_the_report_intact(
    make_env: Callable[..., FakeEnv], tmp_path: Path
) -> None:
    # torch/__init__.py writes a marker and exits 99: any import of it would show.
    env = make_env()
    env.install_healthy_cu130()
    marker = tmp_path / "torch-was-imported"
    (env.site_packages / "torch" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nimport os\nos._exit(99)\n"
    )
    run, markers = spied_run(env, tmp_path, "--format", "json")
    assert run.returncode == 0, run.stderr
    assert run.json["facts"]["torch"]["version"] == "2.14.1+cu130"
    assert not marker.exists()
    assert_torch_never_imported(env, markers)


@pytest.mark.slow
def test_real_torch_is_healthy_and_never_imported(real_torch_venv: FakeEnv, tmp_path: Path) -> None:
    run, markers = spied_run(real_torch_venv, tmp_path, "--format", "json")
    assert run.returncode == 0, run.stdout + run.stderr
    errors = [f["id"] for f in run.json["findings"] if f["severity"] == "error"]
    assert errors == []
    assert run.json["facts"]["torch"]["version"] == "2.14.1+cu130"
    assert run.json["facts"]["torch"]["cuda"] == "13.0"
    assert_torch_never_imported(real_torch_venv, markers)


@pytest.mark.slow
def test_real_torch_header_shows_the_local_version_tag(
    real_torch_venv: FakeEnv, workdir: Path
) -> None:
    # PyPI's dist-info says 2.14.1; torch/version.py says 2.14.1+cu130, and so does the header.
    dist_infos = [p.name for p in real_torch_venv.site_packages.glob("torch-*.dist-info")]
    assert dist_infos == ["torch-2.14.1.dist-info"]
    run = run_doctor("--python", str(real_torch_venv.root), cwd=workdir)
    assert run.returncode == 0, run.stdout
    [torch_line] = [line for line in run.stdout.splitlines() if "│ torch " in line]
    assert "2.14.1+cu130" in torch_line and "CUDA 13.0" in torch_line


@pytest.mark.slow
def test_real_torch_without_cudnn_names_the_wheel_and_its_pin(
    real_torch_venv: FakeEnv, workdir: Path
) -> None:
    pip(real_torch_venv, "uninstall", "-y", CUDNN)
    try:
        run = run_doctor(
            "--python", str(real_torch_venv.root), "--format", "json", "--no-redact", cwd=workdir
        )
        assert run.returncode == 1
        finding = run.finding("missing-cuda-wheel")
        assert [m["name"] for m in finding["data"]["missing"]] == [CUDNN]
        assert finding["data"]["missing"][0]["install"] == f"{CUDNN}=={CUDNN_PIN}"
        # pip installed this venv, so the remedy uses pip with the venv's own python.
        assert finding["remedies"][-1]["text"] == (
            f"{real_torch_venv.python} -m pip install {CUDNN}=={CUDNN_PIN}"
        )
    finally:
        pip(real_torch_venv, "install", f"{CUDNN}=={CUDNN_PIN}")
    restored = run_doctor("--python", str(real_torch_venv.root), "--format", "json", cwd=workdir)
    assert "missing-cuda-wheel" not in restored.finding_ids()
