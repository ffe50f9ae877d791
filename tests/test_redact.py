"""Redaction: nothing private in a pasted report, and nothing else mangled."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest

from doctor.facts import Facts, MachineFacts
from doctor.facts.machine import GpuFacts, NvmlFacts
from doctor.redact import (
    REDACTED,
    RedactionRules,
    Redactor,
    host_pseudonym,
    looks_secret,
    redact,
    run_key,
)
from tests.driver_stub import Driver, DriverStubs, Gpu
from tests.factory import REPO, DoctorRun, FakeEnv, run_doctor
from tests.test_fix import make_lock_project
from tests.test_scenarios_wheels import PYPROJECT

RULES = RedactionRules.build(homes=["/home/alice"], users=["alice", "ci"], hosts=["gpubox7"])


GPUBOX7 = host_pseudonym("gpubox7")


def scrub(text: str) -> str:
    return Redactor(RULES).text(text)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("/home/alice/proj/.venv/bin/python", "~/proj/.venv/bin/python"),
        ("/home/alice", "~"),
        ("/home/alice2/x", "/home/alice2/x"),  # another user's home is not ours
        ("/srv/alice/data", "/srv/<user>/data"),
        ("built by ci in /builds/ci/x", "built by <user> in /builds/<user>/x"),
        ("the decision was made in circleci and ci-tools", None),  # untouched
        (
            "ssh gpubox7 and /scratch/gpubox7/run",
            f"ssh {GPUBOX7} and /scratch/{GPUBOX7}/run",
        ),
        ("gpubox70 is another machine", None),
        ("https://bob:hunter2@pypi.example/simple", f"https://{REDACTED}@pypi.example/simple"),
        ("git+https://ghp_abc123@github.com/o/r", f"git+https://{REDACTED}@github.com/o/r"),
        (
            "https://pypi.example/simple?token=abc&page=2",
            f"https://pypi.example/simple?token={REDACTED}&page=2",
        ),
        (
            "https://s3.example/w.whl?X-Amz-Signature=ff00&X-Amz-Date=1",
            f"https://s3.example/w.whl?X-Amz-Signature={REDACTED}&X-Amz-Date=1",
        ),
        # pip.conf and uv.toml lines, as a probe reading them would carry them.
        (
            "index-url = https://bob:hunter2@pypi.corp.example/simple",
            f"index-url = https://{REDACTED}@pypi.corp.example/simple",
        ),
        (
            'url = "https://__token__:pypi-AgEIcHlwaS5vcmc@upload.pypi.org/legacy/"',
            f'url = "https://{REDACTED}@upload.pypi.org/legacy/"',
        ),
        ("HF_TOKEN=hf_secretvalue123 python train.py", f"HF_TOKEN={REDACTED} python train.py"),
        ("PATH=/usr/bin LD_PRELOAD=/x.so", None),
        (
            "CUDA_VISIBLE_DEVICES=GPU-5c1f4d6e-1a2b-4c3d-8e9f-0123456789ab",
            f"CUDA_VISIBLE_DEVICES=GPU-{REDACTED}",
        ),
        ("MIG-GPU-5c1f4d6e-1a2b-4c3d-8e9f-0123456789ab/1/0", f"MIG-GPU-{REDACTED}"),
        # Tokens in pasted tracebacks and command lines (explain puts the paste in the ticket).
        (
            "401: invalid token hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345 for this repo",
            f"401: invalid token {REDACTED} for this repo",
        ),
        ("uv publish --token pypi-AgEIcHlwaS5vcmcCJGFiY2Q", f"uv publish --token {REDACTED}"),
        (
            "python train.py --hf-token abc123 --epochs 3",
            f"python train.py --hf-token {REDACTED} --epochs 3",
        ),
        ("hf_token=abc123 in ~/.config/x.toml", f"hf_token={REDACTED} in ~/.config/x.toml"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", f"Authorization: Bearer {REDACTED}"),
        (
            "git push https://github.com/o/r with ghp_0123456789abcdefghijABCDEF",
            f"git push https://github.com/o/r with {REDACTED}",
        ),
        ("uv pip install --no-token torch; the token expired", None),
        ('nvidia-cudnn-cu13==9.24.0.43; platform_system == "Linux"', None),
    ],
)
def test_text_rules_remove_private_data_and_nothing_else(before: str, after: str | None) -> None:
    assert scrub(before) == (before if after is None else after)


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "WANDB_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "UV_INDEX_INTERNAL_PASSWORD",
        "GITHUB_PAT",
        "NPM_AUTH_TOKEN",
        "OPENAI_APIKEY",
        "PIP_CREDENTIALS",
    ],
)
def test_secret_looking_variable_names_are_recognised(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "PATH",
        "PWD",
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
        "UV_KEYRING_PROVIDER",
        "UV_INDEX_URL",
        "TORCH_CUDA_ARCH_LIST",
        "MONKEY_BUSINESS",
    ],
)
def test_ordinary_variable_names_are_not_taken_for_secrets(name: str) -> None:
    assert not looks_secret(name)


def test_walk_covers_nested_facts_and_keeps_their_types() -> None:
    gpu = GpuFacts(
        index=0,
        name="NVIDIA H100",
        compute_capability=(9, 0),
        uuid="GPU-5c1f4d6e-1a2b-4c3d-8e9f-0123456789ab",
    )
    facts = Facts(
        environment={"HF_TOKEN": "hf_secretvalue123", "LD_LIBRARY_PATH": "/home/alice/cuda/lib"},
        machine=MachineFacts(nvml=NvmlFacts(status="ok", gpus=(gpu,))),
    )
    clean, kinds = redact(facts, RULES)
    assert isinstance(clean, Facts) and isinstance(clean.machine, MachineFacts)
    assert clean.environment == {"HF_TOKEN": REDACTED, "LD_LIBRARY_PATH": "~/cuda/lib"}
    [clean_gpu] = clean.machine.gpus
    assert clean_gpu.uuid == f"GPU-{REDACTED}"
    assert clean_gpu.compute_capability == (9, 0) and clean_gpu.name == "NVIDIA H100"
    assert kinds == ["home-directory", "secret-variable", "gpu-identifier"]
    assert facts.environment["HF_TOKEN"] == "hf_secretvalue123"  # the original is untouched


def test_serial_numbers_under_any_key_are_masked() -> None:
    clean, kinds = redact({"gpus": [{"serial": "1650123456789", "name": "A100"}]}, RULES)
    assert clean == {"gpus": [{"serial": REDACTED, "name": "A100"}]}
    assert kinds == ["gpu-identifier"]


def test_generic_names_are_not_used_as_words_to_remove() -> None:
    rules = RedactionRules.build(
        homes=["/root"], users=["root", "a", "torch"], hosts=["localhost", "gpu"]
    )
    assert rules.users == () and rules.hosts == ()
    text = "project root /root/x on localhost: torch has no gpu"
    assert Redactor(rules).text(text) == "project root ~/x on localhost: torch has no gpu"


# --- End to end: the CLI on a project with secrets around it ------------------------------

HOSTNAME = socket.gethostname().split(".")[0]
HOST_IS_GENERIC = len(HOSTNAME) < 2 or HOSTNAME.lower() in ("localhost",)

SECRETS = {
    "index password in pyproject.toml": "s3cretpass",
    "index token in pyproject.toml": "idx_tok_987",
    "password in UV_INDEX_URL": "hunter2pw",
    "token in PIP_EXTRA_INDEX_URL": "piptok_555",
    "HF_TOKEN": "hf_secretvalue123",
    "WANDB_API_KEY": "wandb_0123456789abcdef",
}

PRIVATE_INDEX = """
[[tool.uv.index]]
name = "internal"
url = "https://alice:s3cretpass@pypi.internal.example/simple?token=idx_tok_987"
"""


def _secret_environment(home: Path, user: str) -> dict[str, str]:
    return {
        "HOME": str(home),
        "USER": user,
        "LOGNAME": user,
        "HF_TOKEN": SECRETS["HF_TOKEN"],
        "WANDB_API_KEY": SECRETS["WANDB_API_KEY"],
        "UV_INDEX_URL": "https://bob:hunter2pw@mirror.example/simple",
        "PIP_EXTRA_INDEX_URL": "https://mirror.example/simple?access_token=piptok_555",
    }


@pytest.fixture
def alice_project(tmp_path: Path) -> tuple[Path, Path]:
    """~alice/work/<this host>/demo: the venv path carries the home, user and host names."""
    home = tmp_path / "home" / "alice"
    project = make_lock_project(home / "work" / HOSTNAME / "demo", PYPROJECT + PRIVATE_INDEX)
    return home, project


def _run(project: Path, home: Path, *args: str, user: str = "alice") -> DoctorRun:
    return run_doctor(*args, cwd=project, env=_secret_environment(home, user))


def _word(word: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9_\-]){re.escape(word)}(?![A-Za-z0-9_\-])")


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_report_for_a_ticket_carries_no_secret_but_all_findings(
    alice_project: tuple[Path, Path], fmt: str
) -> None:
    home, project = alice_project
    run = _run(project, home, "--format", fmt)
    assert run.returncode == 1, run.stderr
    out = run.stdout
    for what, secret in SECRETS.items():
        assert secret not in out, f"{what} leaked"
    assert str(home) not in out
    assert not _word("alice").search(out), "user name leaked"
    if not HOST_IS_GENERIC:
        assert not _word(HOSTNAME).search(out), "host name leaked"
    assert "lock-missing-dependencies" in out
    assert "~/work/" in out  # the home directory became ~
    if fmt == "json":
        data = json.loads(out)
        schema = json.loads((REPO / "docs" / "report.schema.json").read_text(encoding="utf-8"))
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
        assert data["redacted"] is True
        assert {"home-directory", "url-credentials"} <= set(data["redactions"])
        if not HOST_IS_GENERIC:
            assert "host-name" in data["redactions"]
        assert data["findings"][0]["id"] == "lock-missing-dependencies"
    else:
        assert "redacted: home directory" in out and "credentials in URLs" in out


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_no_redact_keeps_everything(alice_project: tuple[Path, Path], fmt: str) -> None:
    home, project = alice_project
    out = _run(project, home, "--format", fmt, "--no-redact").stdout
    # What torch-doctor collects is kept verbatim (it never reads HF_TOKEN or WANDB_API_KEY).
    for secret in ("s3cretpass", "idx_tok_987", "hunter2pw", "piptok_555"):
        assert secret in out
    assert str(home) in out and _word("alice").search(out)
    if not HOST_IS_GENERIC:
        assert _word(HOSTNAME).search(out)
    if fmt == "json":
        assert json.loads(out)["redactions"] == []


def test_terminal_report_is_unredacted_unless_asked(alice_project: tuple[Path, Path]) -> None:
    home, project = alice_project
    plain = _run(project, home, "--no-color")
    assert str(home) in plain.stdout  # the interpreter's full path, for local viewing
    redacted = _run(project, home, "--no-color", "--redact")
    assert str(home) not in redacted.stdout
    assert not _word("alice").search(redacted.stdout)
    assert "Redacted: home directory" in redacted.stdout


def test_user_named_ci_does_not_mangle_words_containing_it(tmp_path: Path) -> None:
    home = tmp_path / "home" / "ci"
    home.mkdir(parents=True)
    # Outside the home directory, so the user name itself must go as a path component.
    project = make_lock_project(tmp_path / "srv" / "ci" / "decision" / "demo")
    for fmt in ("markdown", "json"):
        out = _run(project, home, "--format", fmt, user="ci").stdout
        assert "/srv/<user>/decision/demo" in out
        assert "/ci/" not in out
        assert "decision" in out
        if fmt == "json":
            assert "user-name" in json.loads(out)["redactions"]


GPU_UUID = "GPU-5c1f4d6e-1a2b-4c3d-8e9f-0123456789ab"


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_gpu_uuids_from_the_driver_are_masked_unless_no_redact(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs, fmt: str
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    h100 = Gpu("NVIDIA H100 80GB HBM3", "9.0", 81559, mig=False, uuid=GPU_UUID)
    driver = driver_stubs.env(Driver(gpus=(h100,)), CUDA_VISIBLE_DEVICES=GPU_UUID)
    args = ("--python", str(env.root), "--format", fmt)
    redacted = run_doctor(*args, cwd=workdir, env=driver).stdout
    assert "5c1f4d6e" not in redacted
    assert "NVIDIA H100 80GB HBM3" in redacted  # the GPU itself is still named
    if fmt == "json":
        data = json.loads(redacted)
        assert "gpu-identifier" in data["redactions"]
        [gpu] = data["facts"]["machine"]["nvml"]["gpus"]
        assert gpu["uuid"] == f"GPU-{REDACTED}" and gpu["compute_capability"] == [9, 0]
    kept = run_doctor(*args, "--no-redact", cwd=workdir, env=driver).stdout
    assert GPU_UUID in kept


def test_a_host_gets_one_pseudonym_per_job_whatever_its_spelling() -> None:
    job = RedactionRules.build([], [], ["node7.cluster.example", "node7"], key="4242")
    out = Redactor(job).text("node7.cluster.example and node7 and node8")
    pseudonym = host_pseudonym("node7", "4242")
    assert out == f"{pseudonym} and {pseudonym} and node8"
    # Another node of the same job computes the same pseudonym for node7.
    other = RedactionRules.build([], [], ["node7"], key="4242")
    assert Redactor(other).text("node7") == pseudonym
    # Another job's key gives another pseudonym: reports of two jobs cannot be joined.
    assert host_pseudonym("node7", "4243") != pseudonym


def test_the_run_key_is_the_job_id_the_launcher_gives_every_node() -> None:
    assert run_key({"SLURM_JOB_ID": "77", "TORCHELASTIC_RUN_ID": "x"}) == "77"
    assert run_key({"TORCHELASTIC_RUN_ID": "x"}) == "x"
    assert run_key({"TORCH_DOCTOR_RUN_KEY": "k", "SLURM_JOB_ID": "77"}) == "k"
    assert run_key({}) == ""
