"""uv-torch-config: the uv settings that route torch wrongly, judged from pyproject.toml.

The first two are run through the real uv on 127.0.0.1: it refuses the configuration, the
doctor names why, `torch-doctor fix` writes the remedy, and the real uv then locks. The
others are unit tests over hand-built facts (uv accepts them silently, which is the point).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from doctor.checks import REGISTRY, Skip, attach_remedies
from doctor.derive import derive
from doctor.facts import Facts, IndexFacts, ProjectFacts, UvSettings
from doctor.facts.lock_graph import GraphPackage, LockGraph
from tests.factory import run_doctor
from tests.test_uv_lock_metadata import UV
from tests.uv_torch_project import Project, torch_projects

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found]

NO_CONFLICTS = """\
[project.optional-dependencies]
cpu = ["torch==2.6.0"]
cu126 = ["torch==2.6.0"]

[tool.uv.sources]
torch = [
    { index = "torch-cpu", extra = "cpu" },
    { index = "torch-cu126", extra = "cu126" },
]
"""

MARKER_EXTRAS = """\
[project.optional-dependencies]
cpu = ["torch==2.6.0"]
cu126 = ["torch==2.6.0"]

[tool.uv]
conflicts = [[{ extra = "cpu" }, { extra = "cu126" }]]

[tool.uv.sources]
torch = [
    { index = "torch-cpu", marker = "extra == 'cpu'" },
    { index = "torch-cu126", marker = "extra == 'cu126'" },
]
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Callable[..., Project]]:
    with torch_projects(tmp_path) as make:
        yield make


def _problems(run: Any) -> list[str]:
    return [p["kind"] for p in run.finding("uv-torch-config")["data"]["problems"]]


@pytest.mark.parametrize(
    ("choice", "kind", "refusal"),
    [
        (NO_CONFLICTS, "conflicts-missing", "conflicting indexes for package `torch`"),
        (MARKER_EXTRAS, "marker-extra", "Source markers must be disjoint"),
    ],
    ids=["conflicts-missing", "marker-extra"],
)
@pytest.mark.uv
@pytest.mark.timeout(300)
@pytest.mark.skipif(UV is None, reason="uv is not installed")
@pytest.mark.skipif(sys.platform != "linux", reason="the wheels are Linux ones")
def test_uv_refuses_it_the_doctor_says_why_and_its_fix_makes_uv_lock(
    project: Callable[..., Project], choice: str, kind: str, refusal: str
) -> None:
    torch = project(choice, lock=False)
    refused = torch.uv("lock", check=False)
    assert refused.returncode != 0 and refusal in refused.stderr, refused.stderr

    run = torch.doctor("--project", str(torch.root))
    assert _problems(run) == [kind]
    fixed = run_doctor("fix", "--yes", "--no-load", "--project", str(torch.root), cwd=torch.root)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr

    torch.uv("lock")
    lock = tomllib.loads((torch.root / "uv.lock").read_text())
    versions = sorted(p["version"] for p in lock["package"] if p["name"] == "torch")
    assert versions == ["2.6.0+cpu", "2.6.0+cu126"]
    assert "uv-torch-config" not in torch.doctor("--project", str(torch.root)).finding_ids()


# --- Unit tests over hand-built facts -----------------------------------------------------

PYTORCH = IndexFacts("pytorch-cu126", "https://download.pytorch.org/whl/cu126", explicit=True)
GUIDE_SOURCES = {
    "torch": ({"index": "pytorch-cu126"},),
    "torchvision": ({"index": "pytorch-cu126"},),
}


def _facts(
    settings: dict[str, Any] | None = None,
    environment: dict[str, str] | None = None,
    torch_wheels: tuple[str, ...] | None = None,
    dependencies: tuple[str, ...] = ("torch==2.6.0", "torchvision==0.21.0"),
) -> Facts:
    project = ProjectFacts(
        root="/p",
        pyproject_path="/p/pyproject.toml",
        lock_path="/p/uv.lock",
        found_by="--project",
        declared_dependencies=dependencies,
        indexes=(PYTORCH,),
    )
    values: dict[str, Any] = {"pyproject_path": "/p/pyproject.toml", "sources": GUIDE_SOURCES}
    values.update(settings or {})
    graph = None
    if torch_wheels is not None:
        graph = LockGraph(
            project="p", packages=(GraphPackage("torch", "2.6.0+cu126", wheels=torch_wheels),)
        )
    return Facts(
        project=project,
        uv_settings=UvSettings(**values),
        lock_graph=graph,
        environment=environment or {},
    )


def _judge(facts: Facts) -> list[dict[str, Any]]:
    outcome = REGISTRY["uv-torch-config"].function(derive(facts))
    assert not isinstance(outcome, Skip)
    return [dataclasses.asdict(p) for f in outcome for p in f.data.problems]


def test_the_uv_guide_configuration_is_quiet() -> None:
    linux = ("torch-2.6.0+cu126-cp311-cp311-manylinux_2_28_x86_64.whl",)
    assert _judge(_facts(torch_wheels=linux)) == []


def test_torchvision_without_torchs_source_is_named_and_routed_like_torch() -> None:
    facts = _facts({"sources": {"torch": GUIDE_SOURCES["torch"]}})
    [problem] = _judge(facts)
    assert problem["kind"] == "family-routing" and problem["package"] == "torchvision"
    [finding] = attach_remedies(REGISTRY["uv-torch-config"].function(derive(facts)), derive(facts))  # type: ignore[arg-type]
    [toml] = [r for r in finding.remedies if r.kind.value == "toml"]
    block = tomllib.loads(toml.text)
    assert block["tool"]["uv"]["sources"]["torchvision"] == [{"index": "pytorch-cu126"}]


@pytest.mark.parametrize(
    ("settings", "environment"),
    [
        ({"torch_backend": "cu126"}, {}),
        ({"pip_torch_backend": "auto"}, {}),
        ({}, {"UV_TORCH_BACKEND": "auto"}),
    ],
    ids=["tool.uv", "tool.uv.pip", "UV_TORCH_BACKEND"],
)
def test_torch_backend_beside_explicit_sources(
    settings: dict[str, Any], environment: dict[str, str]
) -> None:
    [problem] = _judge(_facts(settings, environment))
    assert problem["kind"] == "torch-backend-with-sources"


@pytest.mark.parametrize(
    ("settings", "environment"),
    [
        ({"index_strategy": "unsafe-best-match"}, {}),
        ({}, {"UV_INDEX_STRATEGY": "unsafe-best-match"}),
    ],
    ids=["tool.uv", "UV_INDEX_STRATEGY"],
)
def test_unsafe_best_match_with_a_pytorch_index(
    settings: dict[str, Any], environment: dict[str, str]
) -> None:
    [problem] = _judge(_facts(settings, environment))
    assert problem["kind"] == "unsafe-best-match"


def test_a_targeted_platform_without_a_locked_torch_wheel_asks_for_required_environments() -> None:
    sources = {
        name: (
            {
                "index": "pytorch-cu126",
                "marker": "sys_platform == 'linux' or sys_platform == 'win32'",
            },
        )
        for name in ("torch", "torchvision")
    }
    linux_only = ("torch-2.6.0+cu126-cp311-cp311-manylinux_2_28_x86_64.whl",)
    facts = _facts({"sources": sources}, torch_wheels=linux_only)
    [problem] = _judge(facts)
    assert problem["kind"] == "required-environments" and problem["platforms"] == ("win32",)
    [finding] = attach_remedies(REGISTRY["uv-torch-config"].function(derive(facts)), derive(facts))  # type: ignore[arg-type]
    [toml] = [r for r in finding.remedies if r.kind.value == "toml"]
    assert tomllib.loads(toml.text)["tool"]["uv"]["required-environments"] == [
        "sys_platform == 'win32'"
    ]
    # Once required, it is the lock's business (uv lock fails loudly): quiet here.
    required = _facts(
        {"sources": sources, "required_environments": ("sys_platform == 'win32'",)},
        torch_wheels=linux_only,
    )
    assert _judge(required) == []


def test_no_project_skips() -> None:
    from doctor.checks.registry import outcome_of

    assert isinstance(outcome_of("uv-torch-config", derive(Facts())), Skip)
