"""Run the stdlib-only probe inside the inspected interpreter and turn its JSON into facts."""

from __future__ import annotations

import json
import os
from typing import Any

from doctor.facts import (
    DistributionFacts,
    InterpreterFacts,
    PlatformFacts,
    ProbeFailure,
    RecordFacts,
    TorchBuildFacts,
)
from doctor.probe.contained import Contained
from doctor.probe.start import start_inside
from doctor.probe.text import ENVIRONMENT_CAP, clean_tree

__all__ = ["InterpreterProbe", "finish_interpreter_probe", "probe_interpreter"]


class InterpreterProbe:
    """What the inside probe reported, as facts."""

    def __init__(self) -> None:
        self.interpreter: InterpreterFacts | None = None
        self.platform: PlatformFacts | None = None
        self.distributions: tuple[DistributionFacts, ...] = ()
        self.torch: TorchBuildFacts | None = None
        self.environment: dict[str, str] = {}
        # metadata directory -> real paths of the shared libraries its RECORD lists (the
        # torch family and the CUDA wheels), for the library probe's owners
        self.shared_libraries: dict[str, list[str]] = {}
        self.failures: list[ProbeFailure] = []


def probe_interpreter(python: str, timeout: float = 60.0) -> InterpreterProbe:
    return finish_interpreter_probe(python, start_inside(python, timeout))


def finish_interpreter_probe(python: str, child: Contained) -> InterpreterProbe:
    result = InterpreterProbe()
    run = child.wait()
    if not run.ok:
        result.failures.append(
            ProbeFailure(
                "interpreter", f"the inspected interpreter {python} {run.describe_failure()}"
            )
        )
        return result
    try:
        data = json.loads(run.stdout)
    except (ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser goes (``[[[[…``), not a report.
        what = "JSON nested too deeply" if isinstance(exc, RecursionError) else "no JSON report"
        result.failures.append(
            ProbeFailure("interpreter", f"the inspected interpreter {python} printed {what}")
        )
        return result
    try:
        _fill(result, _cleaned(data))
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        result.failures.append(
            ProbeFailure("interpreter", f"unexpected report from the inside probe: {exc!r}")
        )
    return result


def _cleaned(data: Any) -> Any:
    """The inside probe's report with every string made safe to show (doctor/probe/text.py)."""
    if not isinstance(data, dict):
        return clean_tree(data)
    environment = data.get("environment")
    cleaned = clean_tree({k: v for k, v in data.items() if k != "environment"})
    if environment is not None:
        cleaned["environment"] = clean_tree(environment, ENVIRONMENT_CAP)
    return cleaned


def _real(path: str) -> str | None:
    """``path`` symlink-resolved (None when it cannot be)."""
    try:
        return os.path.realpath(path) if path else None
    except (OSError, ValueError):
        return None


def _fill(result: InterpreterProbe, data: dict[str, Any]) -> None:
    interp = data["interpreter"]
    result.interpreter = InterpreterFacts(
        executable=interp["executable"],
        version=interp["version"],
        implementation=interp["implementation"],
        prefix=interp["prefix"],
        base_prefix=interp["base_prefix"],
        is_venv=bool(interp["is_venv"]),
        purelib=interp["purelib"],
        platlib=interp["platlib"],
        sys_path=tuple(interp["sys_path"]),
        marker_environment=dict(interp["marker_environment"]),
        conda=bool(interp.get("conda", False)),
        venv_creator=interp.get("venv_creator"),
        real_prefix=_real(interp["prefix"]),
        real_site_dirs=tuple(
            dict.fromkeys(
                real
                for real in (_real(s) for s in sorted({interp["purelib"], interp["platlib"]}) if s)
                if real
            )
        ),
    )
    plat = data["platform"]
    result.platform = PlatformFacts(
        system=plat["system"],
        machine=plat["machine"],
        release=plat["release"],
        libc=plat.get("libc"),
        libc_version=plat.get("libc_version"),
    )
    result.environment = {str(k): str(v) for k, v in data.get("environment", {}).items()}
    result.distributions = tuple(_distribution(d) for d in data.get("distributions", []))
    for dist in data.get("distributions", []):
        libraries = (dist.get("record") or {}).get("shared_libraries")
        if libraries:
            result.shared_libraries[dist["metadata_dir"]] = [str(p) for p in libraries]
    torch = data.get("torch")
    if torch is not None:
        result.torch = TorchBuildFacts(
            package_dir=torch["package_dir"],
            version=torch.get("version"),
            cuda=torch.get("cuda"),
            hip=torch.get("hip"),
            git_version=torch.get("git_version"),
            debug=torch.get("debug"),
            lib_files=tuple(torch.get("lib_files", ())),
            error=torch.get("error"),
        )
    for error in data.get("errors", []):
        result.failures.append(ProbeFailure(error["probe"], error["reason"]))
    # Damage the inside probe tolerated is still reported: a check may have to skip for it.
    damage = []
    for dist in result.distributions:
        if dist.error is not None:
            damage.append(ProbeFailure("distributions", f"{dist.metadata_dir}: {dist.error}"))
        if dist.record is not None and dist.record.error is not None:
            damage.append(ProbeFailure("record", f"{dist.metadata_dir}: {dist.record.error}"))
    build = result.torch
    if build is not None and build.error is not None:
        damage.append(ProbeFailure("torch-build", f"{build.package_dir}: {build.error}"))
    result.failures.extend(damage)


def _distribution(data: dict[str, Any]) -> DistributionFacts:
    record = data.get("record")
    return DistributionFacts(
        name=data["name"],
        display_name=data["display_name"],
        version=data["version"],
        location=data["location"],
        metadata_dir=data["metadata_dir"],
        installer=data.get("installer"),
        requires_dist=tuple(data.get("requires_dist", ())),
        provides_extra=tuple(data.get("provides_extra", ())),
        requires_python=data.get("requires_python"),
        wheel_tags=tuple(data.get("wheel_tags", ())),
        record=None
        if record is None
        else RecordFacts(
            present=record["present"],
            files=record["files"],
            missing_count=record["missing_count"],
            missing=tuple(record["missing"]),
            error=record.get("error"),
        ),
        shadowed=bool(data.get("shadowed")),
        real_location=data.get("real_location"),
        error=data.get("error"),
    )
