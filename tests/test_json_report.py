"""`--format json` is exactly one JSON object, valid against docs/report.schema.json."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.factory import REPO, DoctorRun, FakeEnv, run_doctor

SCHEMA_PATH = REPO / "docs" / "report.schema.json"
DOC_PATH = REPO / "docs" / "json-report.md"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def one_json_object(stdout: str) -> dict[str, Any]:
    """The whole of stdout is one JSON object: nothing before it, nothing after it."""
    decoder = json.JSONDecoder()
    assert stdout.lstrip() == stdout, "text before the JSON object"
    value, end = decoder.raw_decode(stdout)
    assert stdout[end:].strip() == "", f"text after the JSON object: {stdout[end:][:200]!r}"
    assert isinstance(value, dict)
    return value


def assert_valid(validator: jsonschema.Draft202012Validator, run: DoctorRun) -> dict[str, Any]:
    report = one_json_object(run.stdout)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(report)]
    assert errors == []
    assert report["exit_code"] == run.returncode
    return report


def test_healthy_report_is_valid(
    validator: jsonschema.Draft202012Validator, make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    report = assert_valid(
        validator, run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    )
    assert report["exit_code"] == 0


def test_report_with_findings_and_remedies_is_valid(
    validator: jsonschema.Draft202012Validator, make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["nvidia-cudnn-cu13", "sympy"])
    env.install("nvidia-nccl-cu13", "2.29.7")
    run = run_doctor("--python", str(env.root), "--format", "json", cwd=workdir)
    report = assert_valid(validator, run)
    assert report["verdict"] == "error" and report["exit_code"] == 1
    assert {"missing-cuda-wheel", "missing-torch-dependency"} <= set(run.finding_ids())
    assert all(f["remedies"] for f in report["findings"])


def test_report_of_an_interpreter_that_cannot_be_probed_is_valid(
    validator: jsonschema.Draft202012Validator, workdir: Path
) -> None:
    python = workdir / "python"
    python.write_text("#!/bin/sh\nexit 3\n")
    python.chmod(0o755)
    report = assert_valid(
        validator, run_doctor("--python", str(python), "--format", "json", cwd=workdir)
    )
    assert report["verdict"] == "incomplete"
    assert report["exit_code"] == 2
    assert report["facts"]["interpreter"] is None
    assert report["facts"]["failures"][0]["probe"] == "interpreter"


def test_report_written_with_output_is_the_same_single_object(
    validator: jsonschema.Draft202012Validator, make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    target = workdir / "report.json"
    run = run_doctor(
        "--python", str(env.root), "--format", "json", "--output", str(target), cwd=workdir
    )
    assert run.returncode == 0
    assert run.stdout == ""
    report = one_json_object(target.read_text(encoding="utf-8"))
    assert list(validator.iter_errors(report)) == []


def test_schema_rejects_a_finding_without_severity(
    validator: jsonschema.Draft202012Validator, make_env: Callable[..., FakeEnv], workdir: Path
) -> None:
    # Guards the guard: the schema really constrains findings.
    env = make_env()
    env.install_healthy_cu130(skip=["triton"])
    report = one_json_object(
        run_doctor("--python", str(env.root), "--format", "json", cwd=workdir).stdout
    )
    broken = copy.deepcopy(report)
    del broken["findings"][0]["severity"]
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(report)
    broken["findings"][0]["remedies"][0]["kind"] = "python"
    assert not validator.is_valid(broken)


def test_documentation_describes_every_top_level_key_and_enum() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    doc = DOC_PATH.read_text(encoding="utf-8")
    for key in schema["properties"]:
        assert f"`{key}`" in doc, f"docs/json-report.md does not describe `{key}`"
    for kind in schema["$defs"]["remedy"]["properties"]["kind"]["enum"]:
        assert f"`{kind}`" in doc
    for verdict in schema["properties"]["verdict"]["enum"]:
        assert f"`{verdict}`" in doc


def test_the_schema_names_every_fact_the_report_carries() -> None:
    """Every field of Facts is described by the schema (facts allow extra keys, so a field
    dropped from the schema would otherwise pass unnoticed, e.g. in a merge)."""
    import dataclasses

    from doctor.facts import Facts

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    described = set(schema["$defs"]["facts"]["properties"])
    fields = {f.name for f in dataclasses.fields(Facts)}
    assert fields - described == set()
    # And each is documented in docs/json-report.md's facts table.
    doc = DOC_PATH.read_text(encoding="utf-8")
    assert [f for f in sorted(fields) if f"| `{f}` |" not in doc] == []


def test_a_report_names_the_schema_file_it_follows_and_compare_reads_it(tmp_path: Path) -> None:
    from doctor.compare import compare_paths
    from doctor.pipeline import judge
    from doctor.render.output import prepare, render_text
    from tests.handmade import healthy_facts

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    text = render_text(prepare(judge(healthy_facts()), "torch-doctor", redacted=False), "json")
    assert json.loads(text)["schema"] == schema["$id"]
    (tmp_path / "node.json").write_text(text)
    comparison = compare_paths([str(tmp_path / "node.json")])
    assert comparison.problems == ()
