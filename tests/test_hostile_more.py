"""Issue 11's bounds, held by the parts added since: compare, compiled extensions, the stack
around torch, the CUDA toolkit probe and the JSON the contained children print.

As in test_hostile.py, each test builds the hostile thing as a machine would have it (an
interpreter or a driver that prints ``[[[[…``, a FIFO or ``/dev/zero`` where a RECORD, a
``direct_url.json``, triton's source or a report should be, escape sequences in a report,
a symbol name or ``$CC``, an ``nvcc``, ``$CC``, ``c++filt`` or ``ldconfig`` that hangs, writes
without end or leaves a daemon), runs the CLI as a subprocess where the tool is reached
that way, and asserts the bound: time within ``--timeout`` plus a margin, no process the
scenario started left alive, the report there. Nothing in the containment is monkeypatched.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.driver_stub import H100, Driver, DriverStubs
from tests.extension_objects import NOT_EXPORTED, TORCH_DEFINES, USES_REMOVED, compile_shared
from tests.factory import FakeEnv
from tests.test_hostile import MARGIN, RSS_CAP_MB, Run, gone, kill_leftovers, read_pids, run

ESCAPES = ("\x1b", "\x07", "\\u001b", "\\u0007")
NVCC_12_1 = (
    "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 12.1, V12.1.105\n"
)
GCC_12 = "gcc (Debian 12.2.0-14+deb12u1) 12.2.0\n"


def no_escapes(text: str) -> bool:
    return not any(e in text for e in ESCAPES)


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(0o755)
    return path


def version_tool(path: Path, output: str) -> Path:
    return script(path, f"cat <<'EOF'\n{output}EOF\n")


# How a child the doctor runs misbehaves; each records the PIDs it starts in ``pids``.
def misbehaving(path: Path, mode: str, pids: Path, output: str) -> Path:
    first_line = output.splitlines()[0]
    bodies = {
        # blocks for ever (its own PID: exec keeps it)
        "hangs": f"echo $$ >> {pids}\nexec sleep 60\n",
        # writes without end
        "floods": f"echo $$ >> {pids}\nexec yes '{first_line}'\n",
        # answers, and leaves a daemon (its own session) holding its stdout
        "leaves a daemon": f"setsid sleep 60 &\necho $! >> {pids}\ncat <<'EOF'\n{output}EOF\n",
    }
    return script(path, bodies[mode])


@pytest.fixture
def pids(workdir: Path) -> Iterator[Path]:
    path = workdir / "started.pids"
    yield path
    kill_leftovers(read_pids(path))


def assert_contained(result: Run, pids: Path, timeout: float) -> None:
    assert result.seconds < timeout + MARGIN, result.seconds
    assert result.peak_rss_mb < RSS_CAP_MB
    started = read_pids(pids)
    assert started, "the misbehaving tool never ran"
    assert all(gone(pid) for pid in started), started


def facts(result: Run) -> dict[str, object]:
    found = result.json["facts"]
    assert isinstance(found, dict)
    return found


# --- JSON nested deeper than the parser goes ---------------------------------------------


def test_an_interpreter_printing_json_nested_too_deeply_is_reported(workdir: Path) -> None:
    python = script(workdir / "python", "head -c 100000 /dev/zero | tr '\\0' '['\necho\n")
    result = run("--python", str(python), "--no-load", "--format", "json", cwd=workdir)
    assert result.returncode == 2  # the interpreter could not be probed: documented
    [reason] = [f for f in result.failures() if f.startswith("interpreter")]
    assert "printed JSON nested too deeply" in reason
    assert "internal error" not in result.stderr + result.stdout


def test_a_driver_printing_json_nested_too_deeply_keeps_its_facts(
    driver_stubs: DriverStubs, workdir: Path
) -> None:
    env = driver_stubs.env(Driver(gpus=(H100,), init_print=100_000))
    result = run("--no-load", "--format", "json", cwd=workdir, env=env)
    assert result.returncode in (0, 1), result.stderr
    machine = facts(result)["machine"]
    assert isinstance(machine, dict)
    assert [g["name"] for g in machine["nvml"]["gpus"]] == [H100.name]
    assert not [f for f in result.failures() if "internal error" in f]


# --- compare -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One real report (of the doctor's own interpreter), to make hostile copies of."""
    directory = tmp_path_factory.mktemp("report")
    result = run("--no-load", "--format", "json", cwd=directory)
    assert result.returncode in (0, 1), result.stderr
    return result.json


def _problems(result: Run) -> dict[str, str]:
    data = result.json
    return {Path(p["source"]).name: p["problem"] for p in data["problems"]}  # type: ignore[union-attr]


def test_compare_refuses_a_fifo_a_device_and_a_huge_file_at_once(
    report: dict[str, object], tmp_path: Path
) -> None:
    (tmp_path / "good.json").write_text(json.dumps(report))
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    with open(tmp_path / "huge.json", "wb") as huge:  # sparse: no disk used
        huge.write(b"{")
        huge.truncate(40 * 1024 * 1024)
    names = ("good.json", "fifo.json", "zero.json", "huge.json")
    result = run("compare", *(str(tmp_path / n) for n in names), "--format", "json",
                 cwd=tmp_path, wall=60)  # fmt: skip
    assert result.seconds < MARGIN + 2
    assert result.peak_rss_mb < RSS_CAP_MB
    assert result.returncode == 1  # a report compared, and problems: documented
    assert result.json["reports"] == 1
    problems = _problems(result)
    assert problems["fifo.json"] == "is a FIFO, not a regular file"
    assert problems["zero.json"] == "is a character device, not a regular file"
    assert problems["huge.json"] == "larger than the 32 MiB a report may be; not read"


def test_compare_gives_each_json_that_is_no_report_one_line(
    report: dict[str, object], tmp_path: Path
) -> None:
    (tmp_path / "good.json").write_text(json.dumps(report))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    # Deep inside a report: past the parser's limit, and just under it (walked after).
    deep = json.loads(json.dumps(report))
    deep["facts"]["node"]["identity"]["launcher_ids"] = {"RANK": "[" * 100_000}
    (tmp_path / "deep-rank.json").write_text(
        json.dumps(deep).replace('"' + "[" * 100_000 + '"', "[" * 100_000 + "]" * 100_000)
    )
    (tmp_path / "nearly-deep.json").write_text(
        json.dumps(deep).replace('"' + "[" * 100_000 + '"', "[" * 950 + "]" * 950)
    )
    for name, value in (("infinite", "Infinity"), ("huge-exit", "1e400"), ("nan", "NaN")):
        text = json.dumps(report).replace('"exit_code": ', f'"exit_code": {value}, "was": ', 1)
        (tmp_path / f"{name}.json").write_text(text)
    result = run("compare", str(tmp_path), "--format", "json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.json["reports"] == 1
    problems = _problems(result)
    assert problems["deep.json"].startswith("JSON nested too deeply to read")
    assert problems["deep-rank.json"].startswith("JSON nested too deeply to read")
    assert "nested too deeply" in problems["nearly-deep.json"]
    for name in ("infinite.json", "huge-exit.json", "nan.json"):
        assert problems[name].startswith("a report with missing or malformed parts"), name
    assert "internal error" not in result.stderr


def test_compare_never_prints_escape_sequences_from_reports(
    report: dict[str, object], tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    hostile = json.loads(json.dumps(report))
    hostile["facts"]["node"]["identity"]["host"] = "node\x1b]0;owned\x07\u202e\u2028"
    hostile["verdict"] = "error"
    hostile["findings"] = [
        {
            "id": "x\x1b[2J",
            "severity": "error\x1b[31m",
            "title": "t\x1b]8;;http://e\x07",
            "root": None,
        }
    ]
    hostile["facts"]["distributions"] = [{"name": "torch", "version": "2\x1b[5m"}]
    (reports / "hostile\x1b[2J.json").write_text(json.dumps(hostile))
    (reports / "good.json").write_text(json.dumps(report))
    (reports / "schema\x1b[1m.json").write_text(json.dumps({"schema": "s\x1b[2Jx", "version": 1}))
    shown = {}
    for fmt in ("terminal", "markdown", "json"):
        result = run("compare", str(reports), "--format", fmt, cwd=tmp_path)
        assert result.returncode == 1, (fmt, result.stderr)
        assert no_escapes(result.stdout), fmt
        assert "\u202e" not in result.stdout and "\u2028" not in result.stdout, fmt
        shown[fmt] = result.stdout
    # What the report said, without its control characters (host names are redacted).
    assert "x[2J" in shown["terminal"] and "t]8;;http://e" in shown["terminal"]
    assert "schema[1m.json" in shown["terminal"]


# --- compiled extensions --------------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """torch/lib stand-ins and an extension needing a symbol they do not export."""
    root = tmp_path_factory.mktemp("extension-stand-ins")
    lib = root / "torch-lib"
    compile_shared(TORCH_DEFINES, lib / "libc10.so", soname="libc10.so")
    compile_shared("", lib / "libtorch_cpu.so", soname="libtorch_cpu.so")
    extension = compile_shared(
        USES_REMOVED,
        root / "objects" / "_C.so",
        link_dir=lib,
        libraries=("c10", "torch_cpu"),
    )
    return lib, extension


def extension_env(root: Path, stand_ins: tuple[Path, Path]) -> FakeEnv:
    lib, extension = stand_ins
    env = FakeEnv.create(root)
    env.install_torch(lib_files={n: lib / n for n in ("libc10.so", "libtorch_cpu.so")})
    env.install("bad-ext", "1.0", files={"bad_ext/_C.so": extension})
    return env


def test_fifos_and_devices_in_extension_metadata_do_not_block(
    stand_ins: tuple[Path, Path], tmp_path: Path, workdir: Path
) -> None:
    env = extension_env(tmp_path / "venv", stand_ins)
    _, extension = stand_ins
    # An extension whose RECORD is a FIFO, one whose RECORD is /dev/zero; the one judged
    # has a FIFO, and another /dev/zero, as direct_url.json.
    fifo_record = env.install("fifo-record", "1.0", files={"fifo_record/_C.so": extension})
    (fifo_record / "RECORD").unlink()
    os.mkfifo(fifo_record / "RECORD")
    zero_record = env.install("zero-record", "1.0", files={"zero_record/_C.so": extension})
    (zero_record / "RECORD").unlink()
    (zero_record / "RECORD").symlink_to("/dev/zero")
    bad = next(env.site_packages.glob("bad_ext-*.dist-info"))
    os.mkfifo(bad / "direct_url.json")
    zero_url = env.install("zero-url", "1.0", files={"zero_url/_C.so": extension})
    (zero_url / "direct_url.json").symlink_to("/dev/zero")
    result = run("--python", str(env.root), "--no-load", "--format", "json", "--timeout", "5",
                 cwd=workdir, wall=60)  # fmt: skip
    assert result.seconds < 5 + MARGIN
    assert result.peak_rss_mb < RSS_CAP_MB
    assert result.returncode == 1, result.stderr
    judged = [f["data"]["distribution"] for f in result.json["findings"]  # type: ignore[union-attr]
              if f["id"] == "extension-abi-mismatch"]  # fmt: skip
    assert sorted(judged) == ["bad-ext", "zero-url"]
    assert not [f for f in result.failures() if "internal error" in f]


def test_symbol_names_with_escape_sequences_are_shown_clean(
    stand_ins: tuple[Path, Path], tmp_path: Path, workdir: Path
) -> None:
    env = extension_env(tmp_path / "venv", stand_ins)
    _, extension = stand_ins
    # The same object, its missing symbol renamed in place (same length: the mangled
    # name stays well formed, and undefined symbols are in no hash table).
    data = extension.read_bytes()
    assert b"implementation" in data
    hostile = data.replace(b"implementation", b"impl\x1b]0;ow\x07ion")
    env.install("odd-ext", "1.0", files={"odd_ext/_C.so": hostile})
    result = run("--python", str(env.root), "--no-load", "--format", "json", cwd=workdir)
    assert no_escapes(result.stdout)
    extensions = facts(result)["extensions"]
    assert isinstance(extensions, dict)
    odd = next(e for e in extensions["extensions"] if e["name"] == "odd-ext")
    [missing] = odd["libraries"][0]["missing"]
    assert missing["name"] == NOT_EXPORTED.replace("implementation", "impl]0;owion")
    terminal = run("--python", str(env.root), "--no-load", "--verbose", cwd=workdir)
    assert no_escapes(terminal.stdout)
    assert "impl]0;owion" in terminal.stdout


def test_a_fifo_or_device_in_tritons_source_does_not_block(
    make_env: Callable[..., FakeEnv], workdir: Path, driver_stubs: DriverStubs
) -> None:
    env = make_env()
    env.install_healthy_cu130(skip=["triton"])
    env.install("triton", "3.8.0", files={"triton/__init__.py": "",
                                          "triton/backends/nvidia/driver.py": ""})  # fmt: skip
    nvidia = env.site_packages / "triton" / "backends" / "nvidia"
    (nvidia / "driver.py").unlink()
    os.mkfifo(nvidia / "driver.py")
    (env.site_packages / "triton" / "common").mkdir()
    (env.site_packages / "triton" / "common" / "build.py").symlink_to("/dev/zero")
    result = run("--python", str(env.root), "--no-load", "--format", "json", "--timeout", "5",
                 cwd=workdir, env=driver_stubs.env(Driver(gpus=(H100,))), wall=60)  # fmt: skip
    assert result.seconds < 5 + MARGIN
    assert result.peak_rss_mb < RSS_CAP_MB
    assert result.returncode in (0, 1), result.stderr
    stack = facts(result)["stack"]
    assert isinstance(stack, dict)
    assert stack["triton_libcuda"]["wanted"] == "libcuda.so.1"  # triton's default


# --- text from the environment ----------------------------------------------------------------


def test_bidi_marks_and_line_separators_never_reach_the_reports(
    make_env: Callable[..., FakeEnv],
) -> None:
    env = make_env()
    env.install_healthy_cu130()
    torch_info = next(env.site_packages.glob("torch-*.dist-info"))
    marks = "\u200e\u200f\u061c\u2028\u2029"
    (torch_info / "INSTALLER").write_text(f"pip{marks}uv\n")
    for fmt in ("terminal", "markdown", "json"):
        result = run("--python", str(env.root), "--no-load", "--format", fmt, cwd=env.root)
        assert result.returncode in (0, 1), result.stderr
        shown = result.stdout.encode().decode("unicode_escape") if fmt == "json" else result.stdout
        assert not set(marks) & set(shown), fmt
        assert "pipuv" in shown, fmt


def test_tool_paths_from_the_environment_are_shown_clean(tmp_path: Path, workdir: Path) -> None:
    # $CC and CUDA_HOME in directories whose names hold escape sequences; gcc 16 beside
    # nvcc 12.1 makes nvcc-host-compiler-unsupported name the compiler's path.
    odd = tmp_path / "x\x1b]0;owned\x07"
    cuda = odd / "cuda"
    version_tool(cuda / "bin" / "nvcc", NVCC_12_1)
    compiler = version_tool(odd / "bin" / "gcc", "gcc (GCC) 16.1.0\n")
    env = FakeEnv.create(tmp_path / "venv")
    env.install_torch()
    path = os.pathsep.join(["/usr/bin", "/bin"])
    environ = {"PATH": path, "CUDA_HOME": str(cuda), "CC": str(compiler)}
    result = run("--python", str(env.root), "--no-load", "--format", "json", cwd=workdir,
                 env=environ)  # fmt: skip
    assert no_escapes(result.stdout)
    toolkit = facts(result)["cuda_toolkit"]
    assert isinstance(toolkit, dict)
    clean_dir = str(tmp_path / "x]0;owned")
    assert toolkit["cuda_home"] == f"{clean_dir}/cuda"
    assert toolkit["host_compiler"]["path"] == f"{clean_dir}/bin/gcc"
    assert toolkit["host_compiler"]["version"] == "16.1.0"  # it ran, under its real path
    terminal = run("--python", str(env.root), "--no-load", cwd=workdir, env=environ)
    assert "nvcc-host-compiler-unsupported" in terminal.stdout
    assert no_escapes(terminal.stdout)


# --- children that misbehave -----------------------------------------------------------------

MODES = ("hangs", "floods", "leaves a daemon")
TIMEOUT = 3.0


def _system_path(*first: Path) -> str:
    # The system's own directories, without /usr/local/bin (a real nvcc may live there).
    return os.pathsep.join([*(str(p) for p in first), "/usr/bin", "/bin"])


@pytest.mark.parametrize("mode", MODES)
def test_an_nvcc_that_misbehaves_is_contained(mode: str, workdir: Path, pids: Path) -> None:
    cuda = workdir / "cuda"
    misbehaving(cuda / "bin" / "nvcc", mode, pids, NVCC_12_1)
    environ = {"CUDA_HOME": str(cuda), "PATH": _system_path()}
    result = run("--no-load", "--format", "json", "--timeout", f"{TIMEOUT:g}", cwd=workdir,
                 env=environ)  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    assert_contained(result, pids, TIMEOUT)
    toolkit = facts(result)["cuda_toolkit"]
    assert isinstance(toolkit, dict)
    if mode == "leaves a daemon":
        assert (toolkit["release"], toolkit["error"]) == ("12.1", None)
    else:
        assert toolkit["release"] is None
        assert re.search(r"did not finish within 3 s|wrote more output", toolkit["error"])


@pytest.mark.parametrize("mode", MODES)
def test_a_cc_that_misbehaves_is_contained(mode: str, workdir: Path, pids: Path) -> None:
    cuda = version_tool(workdir / "cuda" / "bin" / "nvcc", NVCC_12_1).parent.parent
    compiler = misbehaving(workdir / "compilers" / "cc-wrapper", mode, pids, GCC_12)
    environ = {"CUDA_HOME": str(cuda), "PATH": _system_path(), "CC": str(compiler)}
    result = run("--no-load", "--format", "json", "--timeout", f"{TIMEOUT:g}", cwd=workdir,
                 env=environ)  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    assert_contained(result, pids, TIMEOUT)
    toolkit = facts(result)["cuda_toolkit"]
    assert isinstance(toolkit, dict)
    host = toolkit["host_compiler"]
    assert host["path"] == str(compiler)
    if mode == "leaves a daemon":
        assert (host["version"], host["error"]) == ("12.2.0", None)
    else:
        assert re.search(r"did not finish within 3 s|wrote more output", host["error"])


@pytest.mark.parametrize("mode", MODES)
def test_a_cxxfilt_that_misbehaves_is_contained(
    mode: str, stand_ins: tuple[Path, Path], tmp_path: Path, workdir: Path, pids: Path
) -> None:
    env = extension_env(tmp_path / "venv", stand_ins)
    tools = workdir / "tools"
    # A c++filt that "leaves a daemon" answers as a filter: the names back, unchanged.
    bodies = {
        "hangs": f"echo $$ >> {pids}\nexec sleep 60\n",
        "floods": f"echo $$ >> {pids}\nexec yes _ZN3c10\n",
        "leaves a daemon": f"setsid sleep 60 &\necho $! >> {pids}\nexec cat\n",
    }
    script(tools / "c++filt", bodies[mode])
    result = run("--python", str(env.root), "--no-load", "--format", "json", "--timeout",
                 f"{TIMEOUT:g}", cwd=workdir, env={"PATH": _system_path(tools)})  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert_contained(result, pids, TIMEOUT)
    finding = next(f for f in result.json["findings"] if f["id"] == "extension-abi-mismatch")  # type: ignore[union-attr]
    assert f"that torch does not export: {NOT_EXPORTED}" in "\n".join(finding["evidence"])
    extensions = facts(result)["extensions"]
    assert isinstance(extensions, dict)
    # Names it echoed unchanged are no demangling; a hang or a flood, no demangler.
    assert extensions["demangler"] == ("c++filt" if mode == "leaves a daemon" else None)


@pytest.mark.parametrize("mode", MODES)
def test_an_ldconfig_that_misbehaves_is_contained(mode: str, tmp_path: Path, pids: Path) -> None:
    # triton runs /sbin/ldconfig by that path, not from PATH: the probe is given the fake
    # one as the stack probe gives it root/sbin/ldconfig.
    from doctor.probe.stack import triton_libcuda_lookup

    lib = tmp_path / "usr" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcuda.so.1").write_text("")
    line = f"\tlibcuda.so.1 (libc6,x86-64) => {lib}/libcuda.so.1\n"
    ldconfig = misbehaving(tmp_path / "sbin" / "ldconfig", mode, pids, line)
    triton = tmp_path / "site" / "triton"
    (triton / "backends" / "nvidia").mkdir(parents=True)
    (triton / "backends" / "nvidia" / "driver.py").write_text("def libcuda_dirs(): pass\n")
    started = time.monotonic()
    lookup = triton_libcuda_lookup(str(triton), {}, ldconfig=str(ldconfig), timeout=TIMEOUT)
    assert time.monotonic() - started < TIMEOUT + 1
    assert read_pids(pids) and all(gone(pid) for pid in read_pids(pids))
    if mode == "leaves a daemon":
        assert lookup.found == f"{lib}/libcuda.so.1"
    else:
        assert lookup.found is None
        assert lookup.ldconfig_error is not None
        assert re.search(r"did not finish within 3 s|wrote more output", lookup.ldconfig_error)
