"""How close the default `torch-doctor --python <venv>` run is to its physical floor.

Not a test: run it by hand (see bench/README.md); tests/test_bench.py runs it once in
``--quick`` mode so it cannot rot. On the real torch 2.14.1 venv the slow tests use (same
cache directory, built the same way when missing), in one run, with the variants
interleaved round by round (the machine is shared: medians of several runs), it times:

- the default run (terminal report, no project around);
- the floor of "really loadable": a fresh interpreter of the venv that only
  ``ctypes.CDLL``s the libraries the doctor's load probe loaded, in its order and modes
  (read from the doctor's own JSON facts, ``facts.libraries.loads``);
- ``python -m torch.utils.collect_env`` and ``python -c "import torch"``;
- the scale cases: the same venv with 2,000 extra distributions (a hard-linked copy with
  generated dist-info directories), and 8 GPUs against 1 from the stand-in driver
  (tests/c/*.c, compiled as the tests compile them, loaded through LD_LIBRARY_PATH).

It prints each median and each ratio beside its target, then ELF parsing on pyelftools'
public API (ELFFile, DynamicSegment.iter_tags) against doctor/probe/elf.py's path over the
files the run read. Exit status 1 when a target is missed (never in ``--quick`` mode, whose
single runs measure nothing).
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TORCH_VERSION = "2.14.1"
FLOOR_TARGET = 1.25  # the default run against the bare loads of the same libraries
COLLECT_ENV_TARGET = 0.20  # against torch's own environment report
DISTRIBUTIONS_TARGET = 1.3  # 2,000 extra distributions against the plain venv
GPUS_TARGET = 1.2  # 8 GPUs against 1 from the stand-in driver
EXTRA_DISTRIBUTIONS = 2000
MANY_GPUS = 8

# dlopen modes of load_inside.py's stages (RTLD_LOCAL unless TORCH_USE_RTLD_GLOBAL is set,
# which environment() removes); "dependency" entries were loaded by another library.
STAGE_MODES = {
    "torch global deps": os.RTLD_GLOBAL | os.RTLD_NOW,
    "torch preload": os.RTLD_LOCAL,
    "needed by torch": os.RTLD_LOCAL,
    "cudnn sub-library": os.RTLD_LOCAL,
}


STARTED = time.perf_counter()


def progress(what: str) -> None:
    print(f"[{time.perf_counter() - STARTED:5.1f} s] {what} ...", flush=True)


def real_torch_venv() -> Path:
    """The venv the slow tests use (tests/factory.py), built the same way if missing."""
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


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without what would change the runs: bytecode caches are allowed,
    as on a user's machine after the first run; no colour; torch's default dlopen mode."""
    drop = {"PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV", "TORCH_USE_RTLD_GLOBAL", "LD_LIBRARY_PATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Variant:
    """One command to time, with the exit statuses it may end with."""

    name: str
    argv: list[str]
    env: dict[str, str]
    accepted: tuple[int, ...] = (0,)
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run_once(self, cwd: Path) -> tuple[float, float]:
        """Wall and CPU seconds. The CPU is that of the whole process tree: the command's,
        its children's, and its probe processes' still exiting when it ends (this process
        is their subreaper, see collect_orphans)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.Popen(
            self.argv, cwd=cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        _, status, _ = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        collect_orphans()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode not in self.accepted:
            # e.g. a test that uninstalls a wheel from the shared venv while this runs
            sys.exit(f"{self.name} failed with status {proc.returncode}:\n{stderr.decode()}")
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        return wall, cpu

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Processes the timed commands leave behind (a probe still exiting when the doctor
    ends) become this process's children, so collect_orphans can count their CPU."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def collect_orphans(deadline: float = 10.0) -> None:
    """Wait for the re-parented leftovers of the last command (none is expected to live long)."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid == 0:
            time.sleep(0.002)


def time_interleaved(variants: Sequence[Variant], runs: int, cwd: Path, warm_up: bool) -> None:
    """One warm-up of each, then ``runs`` rounds; each round runs every variant once, in
    an order rotated round by round, so a burst of load elsewhere lands on all of them."""
    if warm_up:
        for variant in variants:
            variant.run_once(cwd)
    for round_index in range(runs):
        shift = round_index % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            wall, cpu = variant.run_once(cwd)
            variant.wall.append(wall)
            variant.cpu.append(cpu)


def default_run_facts(venv: Path, cwd: Path) -> dict[str, Any]:
    """The doctor's JSON report of the plain venv, paths unredacted (its facts name what
    the load probe loaded and what the ELF walk read)."""
    proc = subprocess.run(
        [*doctor_command(venv), "--format", "json", "--no-redact"],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode not in (0, 1):
        sys.exit(f"torch-doctor --format json failed with status {proc.returncode}:\n{proc.stderr}")
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def bare_loads(report: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(what was passed to dlopen, mode) of each library the load probe asked for, in order."""
    loads = report["facts"]["libraries"]["loads"]
    out = [
        (str(load["requested"]), STAGE_MODES[load["stage"]])
        for load in loads
        if load["stage"] in STAGE_MODES
    ]
    if not any(load["loaded"] for load in loads):
        sys.exit(
            "the load probe loaded nothing: no floor to measure (is torch's CUDA build there?)"
        )
    return out


def bare_load_source(loads: Sequence[tuple[str, int]]) -> str:
    """A script that only dlopens ``loads`` in order (a failed one is skipped, as it cost
    the probe a failed dlopen too), keeping every handle."""
    return (
        "import ctypes\n"
        "handles = []\n"
        f"for path, mode in {list(loads)!r}:\n"
        "    try:\n"
        "        handles.append(ctypes.CDLL(path, mode=mode))\n"
        "    except OSError:\n"
        "        pass\n"
    )


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        sys.exit(f"no lib/python3*/site-packages in {venv}")
    return found[0]


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def venv_with_distributions(venv: Path, into: Path, count: int) -> Path:
    """A hard-linked copy of ``venv`` (no file of the original is changed: Python replaces
    a bytecode file, it does not rewrite it) with ``count`` more installed distributions:
    a module and a dist-info directory each, as pip writes them (METADATA, INSTALLER,
    WHEEL, RECORD with hashes), some requiring others."""
    copy = into / venv.name
    subprocess.run(["cp", "-al", str(venv), str(copy)], check=True)
    packages = site_packages(copy)
    wheel = b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    for index in range(count):
        name = f"bench_extra_{index:04d}"
        module = f'"""Generated by bench/bench_default_run.py."""\nVALUE = {index}\n'.encode()
        requires = f"Requires-Dist: bench-extra-{index - 1:04d}\n" if index % 3 else ""
        metadata = (
            f"Metadata-Version: 2.1\nName: bench-extra-{index:04d}\nVersion: 1.0.{index}\n"
            f"Summary: a generated distribution\n{requires}"
        ).encode()
        info = packages / f"{name}-1.0.{index}.dist-info"
        info.mkdir()
        (packages / f"{name}.py").write_bytes(module)
        files = {"METADATA": metadata, "INSTALLER": b"pip\n", "WHEEL": wheel}
        for file_name, data in files.items():
            (info / file_name).write_bytes(data)
        rows = [f"{name}.py,{_record_hash(module)},{len(module)}"]
        rows += [f"{info.name}/{n},{_record_hash(d)},{len(d)}" for n, d in files.items()]
        rows.append(f"{info.name}/RECORD,,")
        (info / "RECORD").write_text("\n".join(rows) + "\n")
    return copy


def stub_environments(scratch: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The CLI's environment with the stand-in driver showing 1 GPU, and 8 GPUs."""
    from tests.driver_stub import H100, Driver, DriverStubs, compile_stubs

    stubs = DriverStubs(compile_stubs(scratch / "driver"), scratch / "driver-configs")
    return (
        environment(stubs.env(Driver(gpus=(H100,)))),
        environment(stubs.env(Driver(gpus=(H100,) * MANY_GPUS))),
    )


def elf_paths(report: Mapping[str, Any]) -> list[str]:
    """Every ELF file the run's walk read: torch's objects and each library they reached."""
    paths: dict[str, None] = {}
    for elf_object in report["facts"]["libraries"]["objects"]:
        paths[elf_object["path"]] = None
        for dependency in elf_object.get("dependencies", []):
            if dependency.get("path"):
                paths[dependency["path"]] = None
    return [p for p in paths if os.path.isfile(p)]


def public_api_dynamic(path: str) -> tuple[str | None, tuple[str, ...], str, str]:
    """SONAME, NEEDED, RPATH and RUNPATH through pyelftools' public API only."""
    from elftools.elf.dynamic import DynamicSegment
    from elftools.elf.elffile import ELFFile

    soname, needed, rpath, runpath = None, [], "", ""
    with open(path, "rb") as stream:
        for segment in ELFFile(stream).iter_segments():
            if not isinstance(segment, DynamicSegment):
                continue
            tags: Iterable[Any] = segment.iter_tags()  # DynamicTag's attributes are dynamic
            for tag in tags:
                if tag.entry.d_tag == "DT_NEEDED":
                    needed.append(tag.needed)
                elif tag.entry.d_tag == "DT_SONAME":
                    soname = tag.soname
                elif tag.entry.d_tag == "DT_RPATH":
                    rpath = tag.rpath
                elif tag.entry.d_tag == "DT_RUNPATH":
                    runpath = tag.runpath
            break
    return soname, tuple(needed), rpath, runpath


def import_seconds(statement: str, repeats: int) -> float:
    """Median time of ``statement`` in a fresh interpreter (this venv's Python)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    samples = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(repeats)
    ]
    return statistics.median(samples)


def elf_comparison(paths: Sequence[str], repeats: int) -> list[str]:
    """Lines comparing the two ways of reading the dynamic sections of ``paths``."""
    from doctor.probe import elf

    def doctor_path() -> None:
        for path in paths:
            elf._read_dynamic(path)  # uncached: the run reads each file once

    def public_api() -> None:
        for path in paths:
            public_api_dynamic(path)

    for path in paths:  # both read the same thing (or the comparison means nothing)
        ours = elf._read_dynamic(path)
        soname, needed, rpath, runpath = public_api_dynamic(path)
        theirs = (
            soname,
            needed,
            elf.split_search_path(rpath) if rpath else (),
            elf.split_search_path(runpath) if runpath else (),
        )
        if (ours.soname, ours.needed, ours.rpath, ours.runpath) != theirs:
            sys.exit(f"the ELF readers disagree on {path}: {ours} vs {theirs}")

    def median_ms(work: Callable[[], None]) -> float:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1000

    ours_ms, public_ms = median_ms(doctor_path), median_ms(public_api)
    imports = min(repeats, 5)
    ours_import = import_seconds(
        "import elftools.common.utils, elftools.elf.structs, elftools.elf.enums", imports
    )
    public_import = import_seconds("import elftools.elf.elffile, elftools.elf.dynamic", imports)
    return [
        f"ELF dynamic sections of the {len(paths)} files the run read, median of {repeats}:",
        f"  doctor/probe/elf.py (cached structs, struct.unpack of entries)  {ours_ms:7.1f} ms",
        f"  pyelftools' public API (ELFFile, DynamicSegment.iter_tags)      {public_ms:7.1f} ms"
        f"  ({public_ms / ours_ms:.1f}x)",
        f"  imports in a fresh interpreter: {ours_import * 1000:.0f} ms (the modules elf.py uses)"
        f" vs {public_import * 1000:.0f} ms (elffile, dynamic)",
    ]


def phase_timings(venv: Path) -> list[tuple[str, float]]:
    """The doctor's phases, one after the other in this process (imports paid first).

    Each probe runs here alone, its processes started when it starts; in the real run
    (`all probes`) every probe process starts at once and they overlap. A phase whose API
    moved is reported as unavailable rather than failing the benchmark.
    """
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


@dataclass(frozen=True)
class Ratio:
    label: str
    numerator: Variant
    denominator: Variant
    target: float | None  # None: shown for scale only

    @property
    def value(self) -> float:
        return self.numerator.median / self.denominator.median

    def line(self) -> str:
        value = f"{self.label:<52} {self.value:6.2f}x"
        if self.target is None:
            return value
        verdict = "met" if self.value <= self.target else "MISSED"
        return f"{value}   target <= {self.target:.2f}x  {verdict}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="timed rounds (default: 9)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 round, no warm-up, 20 extra distributions, no phases; "
        "targets are shown, never enforced",
    )
    parser.add_argument("--venv", type=Path, help="the torch venv (default: the slow tests' one)")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale cases")
    parser.add_argument("--no-phases", action="store_true", help="skip the phase breakdown")
    parser.add_argument(
        "--extensions",
        action="store_true",
        help="also time a venv with real compiled extensions (torchvision, torchaudio)",
    )
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    extra = 20 if args.quick else EXTRA_DISTRIBUTIONS

    venv = (args.venv or real_torch_venv()).resolve()
    if args.extensions:
        venv = extensions_venv(venv)
    if not become_subreaper():
        print("(not a subreaper: the CPU column misses probes still exiting)", flush=True)
    cwd = Path("/")  # no project around: the default run of a plain venv
    python = str(venv / "bin" / "python")
    progress("the default run's facts (--format json)")
    report = default_run_facts(venv, cwd)
    loads = bare_loads(report)

    variants = {
        "doctor": Variant(
            "torch-doctor --python <venv>", doctor_command(venv), environment(), (0, 1)
        ),
        "floor": Variant(
            f"bare ctypes.CDLL of the {len(loads)} loads",
            [python, "-B", "-c", bare_load_source(loads)],
            environment(),
        ),
        "collect_env": Variant(
            "python -m torch.utils.collect_env",
            [python, "-m", "torch.utils.collect_env"],
            environment(),
        ),
        "import_torch": Variant(
            'python -c "import torch"', [python, "-c", "import torch"], environment()
        ),
    }
    with tempfile.TemporaryDirectory(prefix="bench-", dir=venv.parent) as scratch_name:
        scratch = Path(scratch_name)
        if not args.no_scale:
            progress(f"a copy of the venv with {extra} more distributions")
            crowded = venv_with_distributions(venv, scratch, extra)
            one_gpu, many_gpus = stub_environments(scratch)
            variants["crowded"] = Variant(
                f"torch-doctor, {extra} extra distributions",
                doctor_command(crowded),
                environment(),
                (0, 1),
            )
            variants["one_gpu"] = Variant(
                "torch-doctor, 1 GPU (stand-in driver)", doctor_command(venv), one_gpu, (0, 1)
            )
            variants["many_gpus"] = Variant(
                f"torch-doctor, {MANY_GPUS} GPUs (stand-in driver)",
                doctor_command(venv),
                many_gpus,
                (0, 1),
            )
        progress(f"timing {len(variants)} commands, {runs} interleaved round(s)")
        time_interleaved(list(variants.values()), runs, cwd, warm_up=not args.quick)
        progress("removing the copy")

    cores = len(os.sched_getaffinity(0))
    print(f"venv: {venv}")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cores} core(s); load average "
        f"{os.getloadavg()[0]:.1f}; {runs} round(s)" + ("" if args.quick else " after one warm-up")
    )
    for variant in variants.values():
        print(
            f"  {variant.name:<44} median {variant.median * 1000:6.0f} ms "
            f"(min {min(variant.wall) * 1000:.0f}, max {max(variant.wall) * 1000:.0f}); "
            f"CPU {statistics.median(variant.cpu) * 1000:.0f} ms"
        )
    ratios = [
        Ratio(
            "default run / bare loads (the floor)",
            variants["doctor"],
            variants["floor"],
            FLOOR_TARGET,
        ),
        Ratio(
            "default run / collect_env",
            variants["doctor"],
            variants["collect_env"],
            COLLECT_ENV_TARGET,
        ),
        Ratio("default run / import torch", variants["doctor"], variants["import_torch"], None),
    ]
    if not args.no_scale:
        ratios += [
            Ratio(
                f"{extra} extra distributions / plain venv",
                variants["crowded"],
                variants["doctor"],
                DISTRIBUTIONS_TARGET,
            ),
            Ratio(
                f"{MANY_GPUS} GPUs / 1 GPU", variants["many_gpus"], variants["one_gpu"], GPUS_TARGET
            ),
        ]
    for ratio in ratios:
        print(ratio.line())
    doctor_cpu = statistics.median(variants["doctor"].cpu)
    print(
        f"the default run's CPU ({doctor_cpu * 1000:.0f} ms, every process) / {cores} core(s) = "
        f"{doctor_cpu / cores * 1000:.0f} ms: no schedule of that work ends sooner"
    )

    progress("ELF readers")
    for line in elf_comparison(elf_paths(report), 1 if args.quick else 15):
        print(line)
    if not (args.quick or args.no_phases):
        print("doctor phases, in-process:")
        for name, seconds in phase_timings(venv):
            print(f"  {name:<44} {seconds * 1000:7.1f} ms")

    missed = [r for r in ratios if r.target is not None and r.value > r.target]
    if missed and not args.quick:
        print("MISSED: " + "; ".join(r.label for r in missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
