"""JSON schemas of the findings' payloads, generated from their dataclasses.

Each finding id declares a payload class (doctor/checks/registry.py); ``--format json``
shows it under ``data``. docs/report.schema.json carries one schema per id, made here:
``python -m doctor.schema docs/report.schema.json`` rewrites that part of the file, and a
test fails when the file and the payload classes disagree.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Union

from doctor.checks import REGISTRY

__all__ = ["finding_data_schemas", "payload_schema", "with_finding_data"]


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return {"type": "null"}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if origin in (Union, getattr(types, "UnionType", Union)):
        options = [_type_schema(a) for a in args]
        return {"anyOf": options}
    if origin is tuple or origin is list:
        item = args[0] if args else Any
        return {"type": "array", "items": _type_schema(item)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1] if args else Any)}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return payload_schema(tp)
    raise TypeError(f"no JSON schema for {tp!r}")


def payload_schema(cls: type) -> dict[str, Any]:
    """The schema of a payload dataclass as ``to_jsonable`` writes it: every field, no more."""
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    fields = [f for f in dataclasses.fields(cls)]
    return {
        "type": "object",
        "required": [f.name for f in fields],
        "additionalProperties": False,
        "properties": {f.name: _type_schema(hints[f.name]) for f in fields},
    }


def finding_data_schemas() -> dict[str, dict[str, Any]]:
    """One schema per finding id, from the registry."""
    return {spec.id: payload_schema(spec.payload) for spec in REGISTRY.values()}


def with_finding_data(schema: dict[str, Any]) -> dict[str, Any]:
    """The report schema with ``$defs.findingData`` and the per-id rule made anew."""
    out = dict(schema)
    defs = dict(out["$defs"])
    defs["findingData"] = finding_data_schemas()
    finding = dict(defs["finding"])
    finding["allOf"] = [
        {
            "if": {"properties": {"id": {"const": finding_id}}},
            "then": {"properties": {"data": {"$ref": f"#/$defs/findingData/{finding_id}"}}},
        }
        for finding_id in defs["findingData"]
    ]
    defs["finding"] = finding
    out["$defs"] = defs
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path("docs/report.schema.json")
    schema = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(with_finding_data(schema), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
