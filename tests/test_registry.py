"""The check registry: declared relations, one module per family, and what a new check costs."""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from doctor.catalogue import family_table, findings_index, render_list, replace_table
from doctor.checks import CHECK_MODULES, REGISTRY, REMEDIES, check, remedy
from doctor.checks.needs import NEEDS
from doctor.derive import Context
from doctor.facts.machine import NvmlStatus
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.pipeline import judge
from doctor.render.markdown import render_markdown
from doctor.render.output import prepare, render_text
from doctor.schema import payload_schema, with_finding_data
from tests.factory import REPO
from tests.handmade import (
    facts,
    healthy_distributions,
    locked_torch,
    project,
)

CHECKS_DIR = REPO / "doctor" / "checks"


def test_every_relation_names_a_registered_check_or_need() -> None:
    for spec in REGISTRY.values():
        for required in spec.requires:
            assert required in NEEDS or required in REGISTRY, (spec.id, required)
        for cause in spec.caused_by:
            assert cause in REGISTRY and cause != spec.id, (spec.id, cause)


def test_caused_by_relations_have_no_cycle() -> None:
    def roots(finding_id: str, seen: tuple[str, ...]) -> None:
        assert finding_id not in seen, f"cycle: {' -> '.join((*seen, finding_id))}"
        for cause in REGISTRY[finding_id].caused_by:
            roots(cause, (*seen, finding_id))

    for finding_id in REGISTRY:
        roots(finding_id, ())


def _imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize("module", CHECK_MODULES)
def test_no_check_module_imports_another_family(module: str) -> None:
    """A check never re-tests another's condition: it declares `requires`/`caused_by`."""
    families = {f"doctor.checks.{m}" for m in CHECK_MODULES} - {f"doctor.checks.{module}"}
    imported = set(_imported_modules(CHECKS_DIR / f"{module}.py"))
    assert imported & families == set()


def test_each_check_and_its_remedy_live_in_the_module_named_after_its_family() -> None:
    for spec in REGISTRY.values():
        assert spec.function.__module__ == f"doctor.checks.{spec.family.replace('-', '_')}"
        builder = REMEDIES.get(spec.id)
        if builder is not None:
            assert builder.__module__ == spec.function.__module__, spec.id


def test_renderers_import_nothing_from_checks() -> None:
    for path in (REPO / "doctor" / "render").glob("*.py"):
        imported = set(_imported_modules(path))
        assert not {m for m in imported if m.startswith("doctor.checks")}, path.name


# What reads the file system. The probes resolve and read; checks, derive and the renderers
# work on the facts alone, so a report judged or rendered elsewhere says the same.
FILE_SYSTEM_CALLS = frozenset(
    {
        "open",
        "realpath",
        "resolve",
        "exists",
        "lexists",
        "isfile",
        "isdir",
        "islink",
        "is_file",
        "is_dir",
        "is_symlink",
        "stat",
        "lstat",
        "readlink",
        "listdir",
        "scandir",
        "iterdir",
        "glob",
        "rglob",
        "read_text",
        "read_bytes",
    }
)
NO_IO_PACKAGES = ("checks", "derive", "render")


def _file_system_uses(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in FILE_SYSTEM_CALLS:
            yield f"{path.name}:{node.lineno}: {ast.unparse(node)}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FILE_SYSTEM_CALLS:
                yield f"{path.name}:{node.lineno}: {node.func.id}()"
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "os.path", "pathlib"):
            names = {alias.name for alias in node.names} & FILE_SYSTEM_CALLS
            if names:
                yield f"{path.name}:{node.lineno}: from {node.module} import {sorted(names)}"


@pytest.mark.parametrize(
    "module",
    sorted(
        str(p.relative_to(REPO / "doctor"))
        for package in NO_IO_PACKAGES
        for p in (REPO / "doctor" / package).glob("*.py")
    ),
)
def test_checks_derive_and_renderers_do_no_file_system_io(module: str) -> None:
    """Paths are resolved (and files read) by the probes, which put the results in the
    facts: os.path.realpath in a renderer would resolve on the host that renders."""
    assert list(_file_system_uses(REPO / "doctor" / module)) == []


def test_formats_are_dispatched_on_the_format_enum_not_on_strings() -> None:
    """One Format enum, exhaustive: `fmt is Format.X` branches ending in assert_never, which
    mypy proves complete; a string comparison would let a new format fall through."""
    from doctor.render.formats import Format

    names = {f.value for f in Format}
    paths = [*(REPO / "doctor" / "render").glob("*.py")]
    paths += [REPO / "doctor" / m for m in ("cli.py", "explain.py", "catalogue.py")]
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Constant) and o.value in names for o in operands):
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_every_payload_has_a_schema_and_the_report_schema_carries_them_all() -> None:
    schema = json.loads((REPO / "docs" / "report.schema.json").read_text(encoding="utf-8"))
    for spec in REGISTRY.values():
        assert dataclasses.is_dataclass(spec.payload), spec.id
        payload_schema(spec.payload)
    # `python -m doctor.schema docs/report.schema.json` writes it: it must be current.
    assert with_finding_data(schema) == schema


def test_generated_tables_in_the_readme_and_the_findings_index_are_current() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    index = (REPO / "docs" / "findings" / "README.md").read_text(encoding="utf-8")
    # `python -m doctor.catalogue` writes both.
    assert replace_table(readme, family_table()) == readme
    assert replace_table(index, findings_index()) == index


# --- relations between findings ---------------------------------------------------------------


def test_a_lock_without_the_cuda_wheels_is_the_one_root_of_the_missing_wheels() -> None:
    # Installed torch declares its wheels; the lock records torch without them; so they
    # are missing from the venv. The lock is what to fix; the missing wheels follow from it.
    deps = [
        (n, None)
        for n in (
            "filelock",
            "typing-extensions",
            "sympy",
            "networkx",
            "jinja2",
            "fsspec",
            "setuptools",
            "triton",
        )
    ]
    all_facts = facts(
        healthy_distributions(skip=["nvidia-cudnn-cu13", "cuda-toolkit"]),
        project=project(locked_torch(dependencies=deps)),
    )
    report = judge(all_facts)
    roots = [f.id for f in report.roots]
    assert "lock-missing-dependencies" in roots
    assert "missing-cuda-wheel" not in roots
    missing = next(f for f in report.findings if f.id == "missing-cuda-wheel")
    assert missing.root == "lock-missing-dependencies" and missing.remedies == ()
    assert report.count(Severity.ERROR) == len(
        [f for f in report.roots if f.severity is Severity.ERROR]
    )


def test_an_nvml_driver_library_mismatch_gives_no_driver_too_old() -> None:
    from doctor.facts.machine import CudaDriverFacts
    from tests.test_driver_checks import machine, with_machine

    # NVML refuses; libcuda still loads and says it supports CUDA 12.4 (an old libcuda
    # beside a newer kernel module): the age of "the driver" is not a second cause.
    broken = dataclasses.replace(
        machine(status=NvmlStatus.RM_VERSION_MISMATCH),
        cuda_driver=CudaDriverFacts(loaded=True, init_result=803, driver_version=12040),
    )
    assert broken.driver_cuda_version == 12040
    report = judge(with_machine(broken))
    ids = [f.id for f in report.findings]
    assert "nvml-driver-mismatch" in ids
    assert "driver-too-old" not in ids
    result = next(r for r in report.results if r.spec.id == "driver-too-old")
    assert result.reason == "see nvml-driver-mismatch"


# --- a new check costs its module, its test and its page -------------------------------------


@dataclass(frozen=True)
class Throwaway(Payload):
    answer: int
    names: tuple[str, ...]


@pytest.fixture
def throwaway_check() -> Iterator[str]:
    finding_id = "throwaway-test-finding"

    @check(
        finding_id,
        severities=(Severity.WARNING,),
        family="registry-test",
        summary="A finding that exists only in this test.",
        label="the throwaway condition holds",
        payload=Throwaway,
        requires=("torch",),
    )
    def _throwaway(ctx: Context) -> list[Finding[Throwaway]]:
        return [
            Finding(
                id=finding_id,
                severity=Severity.WARNING,
                title="the throwaway condition does not hold",
                detail="Only a test raises this.",
                evidence=("evidence line",),
                data=Throwaway(answer=42, names=("a", "b")),
            )
        ]

    @remedy(finding_id)
    def _fix(finding: Finding[Throwaway], ctx: Context) -> list[Remedy]:
        return [Remedy(RemedyKind.SHELL, "run it", f"echo {finding.data.answer}")]

    try:
        yield finding_id
    finally:
        REGISTRY.pop(finding_id)
        REMEDIES.pop(finding_id)


def test_a_new_check_appears_everywhere_from_its_declaration_alone(
    throwaway_check: str, tmp_path: Path
) -> None:
    report = judge(facts(healthy_distributions()))
    [finding] = [f for f in report.findings if f.id == throwaway_check]
    assert finding.remedies[0].text == "echo 42"
    prepared = prepare(report, "torch-doctor", redacted=False)
    terminal = render_text(prepared, "terminal", width=100)
    assert throwaway_check in terminal and "echo 42" in terminal
    data = json.loads(render_text(prepared, "json"))
    [entry] = [f for f in data["findings"] if f["id"] == throwaway_check]
    assert entry["data"] == {"answer": 42, "names": ["a", "b"]}
    schema = with_finding_data(json.loads((REPO / "docs" / "report.schema.json").read_text()))
    assert schema["$defs"]["findingData"][throwaway_check]["required"] == ["answer", "names"]
    assert throwaway_check in render_markdown(report)
    assert throwaway_check in render_list("terminal")
    assert any(throwaway_check in line for line in findings_index())
    assert any(throwaway_check in line for line in family_table())


# --- knowledge defined once ---------------------------------------------------------------


def test_the_loaders_messages_are_one_table_read_by_the_probe_and_both_families() -> None:
    from doctor.checks import libraries, runtime
    from doctor.knowledge import load
    from doctor.knowledge.loader_errors import (
        cannot_open,
        named_object,
        undefined_symbol,
        version_not_found,
    )

    table = load("loader_errors")
    for kind, pattern in (
        ("cannot_open", cannot_open()),
        ("undefined_symbol", undefined_symbol()),
        ("version_not_found", version_not_found()),
    ):
        assert pattern.search(table[kind]["example"]), kind
        for family in (libraries, runtime):
            assert getattr(family, kind.upper()) is pattern, (family.__name__, kind)
    # What each family reads from them, on the loader's and Python's texts.
    site = "/venv/lib/python3.12/site-packages"
    missing = cannot_open().search(
        f"ImportError: {site}/torch/lib/libcudnn.so.9: cannot open shared object file"
    )
    assert missing is not None and missing.group("soname") == "libcudnn.so.9"
    assert missing.group("path") == f"{site}/torch/lib/libcudnn.so.9"
    dlerror = table["undefined_symbol"]["example"]
    named = undefined_symbol().match(dlerror)
    assert named is not None and named.group("version") == "libnvJitLink.so.12"
    assert named_object(dlerror) == f"{site}/torch/lib/../../nvidia/cusparse/lib/libcusparse.so.12"
    assert undefined_symbol().match(f"ImportError: {dlerror}") is None  # dlerror's own text only
    assert undefined_symbol().search(f"ImportError: {dlerror}") is not None
    assert (
        named_object(table["version_not_found"]["example"]) == f"{site}/torch/lib/libtorch_cpu.so"
    )
    assert named_object("version `GLIBCXX_3.4.30' not found") is None


def test_the_torch_family_is_one_list_and_the_inside_probe_reads_every_member() -> None:
    from doctor.checks import drift, uv_config
    from doctor.knowledge import torch_family, torch_index_family
    from doctor.probe import inside, project
    from doctor.remedies import variants

    family = torch_family()
    assert family[0] == "torch" and torch_index_family()[0] == "torch"
    assert set(torch_index_family()) < set(family)
    assert drift.TORCH_FAMILY == project.TORCH_FAMILY == family
    assert uv_config.ROUTED_FAMILY == variants.TORCH_FAMILY == torch_index_family()
    # The inside probe (stdlib only, another interpreter) keeps its own prefixes: each
    # member's files are checked against its RECORD.
    assert all(name.startswith(inside.FAMILY_PREFIXES) for name in family)
