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


def _remedies(facts: Facts) -> list[Any]:
    [finding] = attach_remedies(REGISTRY["uv-torch-config"].function(derive(facts)), derive(facts))  # type: ignore[arg-type]
    return list(finding.remedies)


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
    facts = _facts(settings, environment)
    [problem] = _judge(facts)
    assert problem["kind"] == "torch-backend-with-sources"
    # The advice: keep the sources, drop the backend everywhere it is set.
    [text] = [r for r in _remedies(facts) if r.kind.value == "text"]
    assert text.summary == "choose one way"
    assert "keep the [tool.uv.sources] entries" in text.text
    assert "remove `torch-backend` from [tool.uv] / [tool.uv.pip]" in text.text
    assert "unset UV_TORCH_BACKEND" in text.text
    assert not [r for r in _remedies(facts) if r.kind.value in ("toml", "shell")]


@pytest.mark.parametrize(
    ("settings", "environment", "where"),
    [
        ({"index_strategy": "unsafe-best-match"}, {}, "[tool.uv] index-strategy"),
        ({"pip_index_strategy": "unsafe-best-match"}, {}, "[tool.uv.pip] index-strategy"),
        ({}, {"UV_INDEX_STRATEGY": "unsafe-best-match"}, "UV_INDEX_STRATEGY"),
    ],
    ids=["tool.uv", "tool.uv.pip", "UV_INDEX_STRATEGY"],
)
def test_unsafe_best_match_with_a_pytorch_index(
    settings: dict[str, Any], environment: dict[str, str], where: str
) -> None:
    facts = _facts(settings, environment)
    [problem] = _judge(facts)
    assert problem["kind"] == "unsafe-best-match"
    assert problem["text"].startswith(f"{where} = 'unsafe-best-match' with a PyTorch index")
    [text] = [r for r in _remedies(facts) if r.kind.value == "text"]
    assert text.summary == "use uv's default index strategy"
    assert 'Remove `index-strategy = "unsafe-best-match"`' in text.text
    assert "unset UV_INDEX_STRATEGY" in text.text and "`explicit = true`" in text.text


@pytest.mark.parametrize("strategy", ["first-index", "unsafe-first-match"])
def test_other_index_strategies_are_quiet(strategy: str) -> None:
    assert _judge(_facts({"index_strategy": strategy, "pip_index_strategy": strategy})) == []


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
    remedies = _remedies(facts)
    [toml] = [r for r in remedies if r.kind.value == "toml"]
    assert tomllib.loads(toml.text)["tool"]["uv"]["required-environments"] == [
        "sys_platform == 'win32'"
    ]
    # `torch-doctor fix` first, then the follow-up it prints and a shell remedy runs.
    assert toml.summary.startswith("run `torch-doctor fix`: it writes this into pyproject.toml")
    assert "then `uv lock`" in toml.summary
    assert remedies[-1].kind.value == "shell" and remedies[-1].text.startswith("uv lock\n")
    # Once required, it is the lock's business (uv lock fails loudly): quiet here.
    required = _facts(
        {"sources": sources, "required_environments": ("sys_platform == 'win32'",)},
        torch_wheels=linux_only,
    )
    assert _judge(required) == []


def test_no_project_skips() -> None:
    from doctor.checks.registry import outcome_of

    assert isinstance(outcome_of("uv-torch-config", derive(Facts())), Skip)


X86_64_ONLY = ("torch-2.6.0+cu126-cp311-cp311-manylinux_2_28_x86_64.whl",)
LINUX_X86_64 = "sys_platform == 'linux' and platform_machine == 'x86_64'"
LINUX_AARCH64 = "platform_machine == 'aarch64' and sys_platform == 'linux'"


def _guide_sources(marker: str) -> dict[str, tuple[dict[str, str], ...]]:
    return {n: ({"index": "pytorch-cu126", "marker": marker},) for n in ("torch", "torchvision")}


@pytest.mark.parametrize(
    "settings",
    [
        {"environments": (LINUX_X86_64, LINUX_AARCH64)},
        {"sources": _guide_sources(f"({LINUX_X86_64}) or ({LINUX_AARCH64})")},
        {"sources": _guide_sources("platform_machine == 'aarch64'")},
    ],
    ids=["tool.uv environments", "torch's source marker", "a machine alone"],
)
def test_an_aarch64_target_with_only_x86_64_torch_wheels(settings: dict[str, Any]) -> None:
    facts = _facts(settings, torch_wheels=X86_64_ONLY)
    [problem] = _judge(facts)
    # A Linux wheel is not an aarch64 one: the machine counts, not only sys_platform.
    assert problem["kind"] == "required-environments"
    assert problem["platforms"] == ("linux aarch64",)
    [toml] = [r for r in _remedies(facts) if r.kind.value == "toml"]
    assert tomllib.loads(toml.text)["tool"]["uv"]["required-environments"] == [
        "sys_platform == 'linux' and platform_machine == 'aarch64'"
    ]


@pytest.mark.parametrize(
    ("required", "quiet"),
    [
        ((LINUX_AARCH64,), True),
        (("sys_platform == 'linux'",), True),  # covers every Linux machine
        (("sys_platform == 'linux' and platform_machine == 'x86_64'",), False),
        # Names aarch64 as text, and excludes it: a substring test took it for required.
        (("platform_machine != 'aarch64'",), False),
    ],
    ids=["the pair", "all of linux", "another machine", "excluded by name"],
)
def test_required_environments_are_evaluated_not_searched(
    required: tuple[str, ...], quiet: bool
) -> None:
    settings = {"environments": (LINUX_X86_64, LINUX_AARCH64), "required_environments": required}
    assert (_judge(_facts(settings, torch_wheels=X86_64_ONLY)) == []) is quiet


def test_a_target_outside_tool_uv_environments_is_not_asked_for() -> None:
    # torch's source names win32, but the lock only resolves Linux x86_64: nothing lacks.
    settings = {
        "environments": (LINUX_X86_64,),
        "sources": _guide_sources("sys_platform == 'linux' or sys_platform == 'win32'"),
    }
    assert _judge(_facts(settings, torch_wheels=X86_64_ONLY)) == []


def test_wheels_for_the_targeted_machines_are_quiet() -> None:
    wheels = (*X86_64_ONLY, "torch-2.6.0+cu126-cp311-cp311-manylinux_2_28_aarch64.whl")
    settings = {"environments": (LINUX_X86_64, LINUX_AARCH64)}
    assert _judge(_facts(settings, torch_wheels=wheels)) == []
    # A pure wheel serves every platform; a marker this doctor cannot read targets none.
    assert _judge(_facts(settings, torch_wheels=("torch-2.6.0-py3-none-any.whl",))) == []
    odd = {"environments": ("sys_platform ~= 'linux' and",)}
    assert _judge(_facts(odd, torch_wheels=X86_64_ONLY)) == []


# --- The same with the real uv: an aarch64 target, x86_64 torch wheels only ------------------

# Linux x86_64 and aarch64 take torch from the CUDA index, which has x86_64 wheels only.
# (Named in [tool.uv] environments instead, the real uv refuses to lock: it checks wheels
# for every listed environment. In sources and requirements it does not.)
AARCH64_TOO = """\
[project.optional-dependencies]
cuda = ["torch==2.6.0; sys_platform == 'linux' and (platform_machine == 'x86_64' or platform_machine == 'aarch64')"]

[tool.uv.sources]
torch = [{ index = "torch-cu126", marker = "platform_machine == 'x86_64' or platform_machine == 'aarch64'" }]
"""  # noqa: E501


@pytest.mark.uv
@pytest.mark.timeout(300)
@pytest.mark.skipif(UV is None, reason="uv is not installed")
@pytest.mark.skipif(sys.platform != "linux", reason="the wheels are Linux ones")
def test_uv_locks_an_aarch64_target_without_a_torch_wheel_and_the_fix_makes_it_refuse(
    tmp_path: Path,
) -> None:
    with torch_projects(tmp_path) as make:
        torch = make(AARCH64_TOO, lock=False, torch_machines=("x86_64",))
        torch.uv("lock")  # uv accepts it: nothing says aarch64 has no torch
        lock = tomllib.loads((torch.root / "uv.lock").read_text())
        [entry] = [p for p in lock["package"] if p["name"] == "torch"]
        assert [w["url"].rsplit("-", 1)[-1] for w in entry["wheels"]] == [
            "manylinux_2_28_x86_64.whl"
        ]

        run = torch.doctor("--project", str(torch.root))
        [problem] = run.finding("uv-torch-config")["data"]["problems"]
        assert problem["kind"] == "required-environments"
        # Not darwin x86_64: the source names x86_64, but the project needs torch on Linux only.
        assert problem["platforms"] == ["linux aarch64"]

        fixed = run_doctor("fix", "--yes", "--no-load", "--project", str(torch.root))
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert "  uv lock\n" in fixed.stdout.split("Next, run", 1)[1], fixed.stdout
        # Now `uv lock` says what the lock silently lacked, for the platform named.
        refused = torch.uv("lock", check=False)
        assert refused.returncode != 0 and "aarch64" in refused.stderr, refused.stderr
        assert "uv-torch-config" not in torch.doctor("--project", str(torch.root)).finding_ids()


def test_tool_uv_pip_index_strategy_is_read_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "0.1.0"\ndependencies = ["torch==2.6.0"]\n\n'
        '[[tool.uv.index]]\nname = "pytorch-cu126"\n'
        'url = "https://download.pytorch.org/whl/cu126"\nexplicit = true\n\n'
        '[tool.uv.sources]\ntorch = [{ index = "pytorch-cu126" }]\n\n'
        '[tool.uv.pip]\nindex-strategy = "unsafe-best-match"\n'
    )
    run = run_doctor("--project", str(tmp_path), "--format", "json", "--no-load", cwd=tmp_path)
    [problem] = run.finding("uv-torch-config")["data"]["problems"]
    assert problem["kind"] == "unsafe-best-match"
    assert "[tool.uv.pip] index-strategy = 'unsafe-best-match'" in problem["text"]
    assert run.json["facts"]["uv_settings"]["pip_index_strategy"] == "unsafe-best-match"
