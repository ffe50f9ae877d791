"""How long the default `torch-doctor --python <venv>` takes, against torch's own collect_env.

Not a test: run it by hand (see bench/README.md). It uses the real torch 2.14.1 venv the
slow tests use (same cache directory, built the same way when missing), times N runs of
each command as subprocesses after a warm-up, prints the medians and their ratio, and
exits 1 when the doctor takes more than BUDGET (10 %) of collect_env's time.

Bytecode caches are allowed (PYTHONDONTWRITEBYTECODE is removed from the environment), as
on a user's machine after the first run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TORCH_VERSION = "2.14.1"
BUDGET = 0.10


def real_torch_venv() -> Path:
    """The venv the slow tests use (tests/factory.py), built the same way if missing."""
    sys.path.insert(0, str(REPO))
    from tests.factory import real_torch_venv_path

    print("the real torch venv (built once, about a minute, if missing) ...", flush=True)
    return real_torch_venv_path(TORCH_VERSION)


# Compiled extensions of torch for the --extensions case: real wheels, fetched by pip
# (from this machine's wheel directories, else PyPI) into the cache once.
EXTENSION_WHEELS = ("torchvision==0.29.1", "torchaudio")


def extensions_venv(torch_venv: Path) -> Path:
    """A venv that sees the real torch venv (a .pth file) and holds real compiled
    extensions of torch, installed with uv; built once beside the torch venv."""
    venv = torch_venv.parent / f"{torch_venv.name}-extensions"
    done = venv.with_name(venv.name + ".done")
    if done.exists():
        return venv
    wheels = venv.with_name(venv.name + "-wheels")
    python = str(torch_venv / "bin" / "python")
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "-d",
            str(wheels),
            *EXTENSION_WHEELS,
        ],
        check=True,
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    torch_site = next(torch_venv.glob("lib/python3*/site-packages"))
    (site / "real_torch.pth").write_text(f"{torch_site}\n")
    subprocess.run(
        [
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "--no-deps",
            "--offline",
            *map(str, wheels.glob("*.whl")),
        ],
        check=True,
    )
    done.write_text("ok\n")
    return venv


def doctor_command(venv: Path) -> list[str]:
    script = Path(sys.executable).parent / "torch-doctor"
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "doctor"]
    return [*launcher, "--python", str(venv)]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.pop("VIRTUAL_ENV", None)
    env["NO_COLOR"] = "1"
    return env


class Runs:
    """Wall-clock and CPU seconds of each timed run of one command."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []


def time_runs(argv: Sequence[str], runs: int, cwd: Path, accepted: Sequence[int] = (0,)) -> Runs:
    """Run ``argv`` ``runs`` times after a warm-up. CPU is the process's own plus that of
    the children it collected (wait4); a child still exiting when it ends is not counted,
    so the CPU figure is a lower bound."""
    env = environment()
    subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=600)  # warm-up
    out = Runs()
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        out.wall.append(time.perf_counter() - started)
        out.cpu.append(usage.ru_utime + usage.ru_stime)
        returncode = os.waitstatus_to_exitcode(status)
        if returncode not in accepted:
            # e.g. a test that uninstalls a wheel from the shared venv while this runs
            sys.exit(f"{argv[0]} failed with status {returncode}:\n{stderr.decode()}")
    return out


def phase_timings(venv: Path) -> list[tuple[str, float]]:
    """The doctor's phases, one after the other in this process (imports paid first).

    Each probe runs here alone, its processes started when it starts; in the real run
    (`all probes`) every probe process starts at once and they overlap. A phase whose API
    moved is reported as unavailable rather than failing the benchmark.
    """
    sys.path.insert(0, str(REPO))
    phases: list[tuple[str, float]] = []

    def timed(name: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            result = work()
        except Exception as exc:
            phases.append((f"{name} (unavailable: {type(exc).__name__})", 0.0))
            return None
        phases.append((name, time.perf_counter() - started))
        return result

    modules = timed("import the pipeline and renderer", _import_pipeline)
    if modules is None:
        return phases
    from doctor.pipeline import judge
    from doctor.probe import ProbeOptions, gather
    from doctor.probe.interpreter import probe_interpreter
    from doctor.probe.target import resolve_target
    from doctor.render.terminal import render_terminal_text

    target = resolve_target(str(venv), None)
    inside = timed("inside probe (target interpreter)", lambda: probe_interpreter(target.python))

    def libraries(load: bool) -> Any:
        from doctor.probe.libraries import probe_libraries

        return probe_libraries(
            target.python,
            inside.torch,
            inside.interpreter,
            inside.distributions,
            inside.environment,
            timeout=60.0,
            load=load,
            shared_libraries=inside.shared_libraries,
        )

    def machine() -> Any:
        from doctor.probe.machine import MachineProbe

        return MachineProbe(timeout=60.0).finish(inside.torch)

    def extensions() -> Any:
        from doctor.probe.extensions import probe_extensions

        return probe_extensions(inside.distributions, inside.torch)

    if inside is not None:
        timed("library probe, static (ELF)", lambda: libraries(False))
        timed("library probe, with contained load", lambda: libraries(True))
        timed("machine probe (NVML, libcuda, fatbin)", machine)
        # After the library probe, as in the run: pyelftools is imported by then.
        timed("extensions probe (symbols vs torch's exports)", extensions)
    facts = timed("all probes (gather, as run)", lambda: gather(ProbeOptions(target=target)))
    report = timed("checks and remedies", lambda: judge(facts))
    timed("terminal rendering", lambda: render_terminal_text(report))
    return phases


def _import_pipeline() -> bool:
    import doctor.cli
    import doctor.pipeline
    import doctor.render.terminal  # noqa: F401

    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (default: 7)")
    parser.add_argument("--no-phases", action="store_true", help="skip the phase breakdown")
    parser.add_argument(
        "--extensions",
        action="store_true",
        help="also time a venv with real compiled extensions (torchvision, torchaudio)",
    )
    args = parser.parse_args(argv)

    venv = real_torch_venv()
    if args.extensions:
        venv = extensions_venv(venv)
    cwd = Path("/")  # no project around: the default run of a plain venv
    doctor = time_runs(doctor_command(venv), args.runs, cwd, accepted=(0, 1))
    collect_env = time_runs(
        [str(venv / "bin" / "python"), "-m", "torch.utils.collect_env"], args.runs, cwd
    )
    doctor_median = statistics.median(doctor.wall)
    collect_median = statistics.median(collect_env.wall)
    ratio = doctor_median / collect_median
    doctor_cpu = statistics.median(doctor.cpu)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    print(f"venv: {venv}")
    print(f"runs: {args.runs} of each, after one warm-up; bytecode caches allowed")
    for name, runs, median in (
        ("torch-doctor --python <venv>     ", doctor, doctor_median),
        ("python -m torch.utils.collect_env", collect_env, collect_median),
    ):
        print(
            f"{name}  median {median * 1000:7.0f} ms  "
            f"(min {min(runs.wall) * 1000:.0f}, max {max(runs.wall) * 1000:.0f}); "
            f"CPU median {statistics.median(runs.cpu) * 1000:.0f} ms"
        )
    print(f"ratio: {ratio:.3f} (budget {BUDGET:.2f})")
    if cores:
        # Every process of the run shares these cores: no schedule ends sooner.
        print(
            f"floor on {cores} core(s): the doctor's CPU ({doctor_cpu * 1000:.0f} ms, at least) "
            f"/ {cores} = {doctor_cpu / cores * 1000:.0f} ms, "
            f"ratio {doctor_cpu / cores / collect_median:.3f}"
        )
    if not args.no_phases:
        print("doctor phases, in-process:")
        for name, seconds in phase_timings(venv):
            print(f"  {name:<44} {seconds * 1000:7.1f} ms")
    if ratio > BUDGET:
        print(f"FAIL: the default run takes {ratio:.1%} of collect_env's time", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
