"""Compiled extensions against the real torch 2.14.1: C++ objects compiled here, and the
real torchvision wheels, judged by the symbols torch's own libraries export.

The extensions live in a venv of their own that sees the shared real-torch venv through a
``.pth`` file (the shared venv is never changed); they are installed from wheels by the
real ``uv pip install``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.extension_objects import (
    NOT_EXPORTED,
    NOT_EXPORTED_DEMANGLED,
    USES_EXPORTED,
    USES_REMOVED,
    build_extension_wheel,
    compile_shared,
)
from tests.factory import DoctorRun, FakeEnv, real_torch_venv_path, run_doctor

pytestmark = pytest.mark.slow

EXTENSION_IDS = {
    "extension-abi-mismatch",
    "extension-cxx11-abi-mismatch",
    "extension-cuda-major-mismatch",
    "extension-gpu-arch-unsupported",
}


@pytest.fixture(scope="module")
def torch_site() -> Path:
    found = sorted((real_torch_venv_path() / "lib").glob("python3*/site-packages"))
    return found[0]


def overlay_venv(root: Path, torch_site: Path) -> FakeEnv:
    """A venv of its own that also sees the real torch venv's site-packages."""
    env = FakeEnv.create(root)
    (env.site_packages / "real_torch.pth").write_text(f"{torch_site}\n")
    return env


def uv_install(env: FakeEnv, *wheels: Path) -> None:
    subprocess.run(
        ["uv", "pip", "install", "--python", str(env.python), "--no-deps", "--offline"]
        + [str(w) for w in wheels],
        check=True,
        capture_output=True,
    )


def extension(
    tmp_path: Path,
    torch_site: Path,
    sources: Sequence[str],
    *,
    name: str = "demo-ext",
    version: str = "1.0.0",
    requires_dist: Sequence[str] = (),
    flags: Sequence[str] = (),
    libraries: Sequence[str] = ("c10", "torch_cpu"),
    link_dir: Path | None = None,
) -> FakeEnv:
    """A venv holding one extension whose _C.so is compiled from ``sources``."""
    package = name.replace("-", "_")
    obj = compile_shared(
        "\n".join(sources),
        tmp_path / "build" / "_C.so",
        link_dir=link_dir or torch_site / "torch" / "lib",
        libraries=libraries,
        flags=flags,
    )
    wheel = build_extension_wheel(
        tmp_path / "wheels", name, version, {f"{package}/_C.so": obj}, requires_dist=requires_dist
    )
    env = overlay_venv(tmp_path / "venv", torch_site)
    uv_install(env, wheel)
    return env


def doctor(env: FakeEnv, workdir: Path, *args: str) -> DoctorRun:
    return run_doctor(
        "--python", str(env.root), "--no-load", "--format", "json", *args, cwd=workdir
    )


def test_extension_needing_only_symbols_torch_exports_is_quiet(
    tmp_path: Path, torch_site: Path, workdir: Path
) -> None:
    env = extension(tmp_path, torch_site, [USES_EXPORTED])
    run = doctor(env, workdir)
    assert not EXTENSION_IDS & set(run.finding_ids()), run.json["findings"]
    (found,) = run.json["facts"]["extensions"]["extensions"]
    assert found["name"] == "demo-ext"
    (library,) = found["libraries"]
    assert library["torch_needed"] == ["libc10.so", "libtorch_cpu.so"]
    assert library["torch_symbols"] == 1 and library["missing_count"] == 0
    assert run.json["facts"]["extensions"]["torch_cxx11_abi"] is True


def test_extension_built_for_another_torch_names_the_missing_symbol_and_its_pin(
    tmp_path: Path, torch_site: Path, workdir: Path
) -> None:
    env = extension(
        tmp_path, torch_site, [USES_EXPORTED, USES_REMOVED], requires_dist=["torch==2.13.0"]
    )
    run = doctor(env, workdir)
    assert run.returncode == 1
    finding = run.finding("extension-abi-mismatch")
    assert finding["severity"] == "error"
    assert "demo-ext 1.0.0" in finding["title"] and "torch 2.14.1+cu130" in finding["title"]
    evidence = "\n".join(finding["evidence"])
    assert "demo_ext/_C.so needs 1 of its 2 torch symbols" in evidence
    assert f"{NOT_EXPORTED_DEMANGLED} ({NOT_EXPORTED})" in evidence
    assert "Requires-Dist: torch==2.13.0" in evidence
    remedies = "\n".join(r["text"] for r in finding["remedies"])
    assert "--no-build-isolation --no-binary demo-ext" in remedies
    # The torch it was built for, exactly, in the installed torch's variant and from its index.
    [back] = [r for r in finding["remedies"] if r["summary"].startswith("or go back")]
    assert back["text"].endswith(
        " --index-url https://download.pytorch.org/whl/cu130 torch==2.13.0+cu130\n"
    )
    assert "extension-cxx11-abi-mismatch" not in run.finding_ids()


def test_extension_without_a_torch_pin_gets_no_torch_to_go_back_to(
    tmp_path: Path, torch_site: Path, workdir: Path
) -> None:
    env = extension(tmp_path, torch_site, [USES_REMOVED])
    finding = doctor(env, workdir).finding("extension-abi-mismatch")
    remedies = "\n".join(r["text"] for r in finding["remedies"])
    assert "torch==" not in remedies and "--no-build-isolation" in remedies


def test_extension_built_with_the_old_cxx_abi_is_one_abi_finding(
    tmp_path: Path, torch_site: Path, workdir: Path
) -> None:
    env = extension(
        tmp_path,
        torch_site,
        [USES_EXPORTED],
        name="flash-demo",
        version="2.8.3+cu13torch2.14cxx11abiFALSE",
        flags=["-D_GLIBCXX_USE_CXX11_ABI=0"],
    )
    run = doctor(env, workdir)
    assert "extension-abi-mismatch" not in run.finding_ids()
    finding = run.finding("extension-cxx11-abi-mismatch")
    evidence = "\n".join(finding["evidence"])
    assert "_GLIBCXX_USE_CXX11_ABI=0" in evidence and "_GLIBCXX_USE_CXX11_ABI=1" in evidence
    assert "c10::detail::torchCheckFail" in evidence
    remedies = "\n".join(r["text"] for r in finding["remedies"])
    assert "--no-build-isolation" in remedies
    # flash-attn's own build for this torch: the same naming, with torch's C++ ABI.
    [own] = [r for r in finding["remedies"] if r["kind"] == "text"]
    assert "+cu13torch2.14cxx11abiTRUE" in own["summary"]
    assert "flash_demo-2.8.3+cu13torch2.14cxx11abiFALSE" in own["text"]
    # Built for this torch release already: no torch to go back to.
    assert not [r for r in finding["remedies"] if r["summary"].startswith("or go back")]


def test_extension_needing_the_cuda_12_runtime_beside_cuda_13_torch_fires(
    tmp_path: Path, torch_site: Path, workdir: Path
) -> None:
    stub = compile_shared(
        'extern "C" int cudaRuntimeGetVersion(int* v) { *v = 12080; return 0; }\n',
        tmp_path / "stub" / "libcudart.so.12",
        soname="libcudart.so.12",
    )
    links = tmp_path / "links"
    links.mkdir()
    for name in ("libc10.so", "libtorch_cpu.so"):
        (links / name).symlink_to(torch_site / "torch" / "lib" / name)
    (links / "libcudart.so").symlink_to(stub)
    env = extension(
        tmp_path,
        torch_site,
        [USES_EXPORTED],
        libraries=("c10", "torch_cpu", "cudart"),
        link_dir=links,
    )
    run = doctor(env, workdir)
    finding = run.finding("extension-cuda-major-mismatch")
    assert "libcudart.so.12" in finding["title"] and "libcudart.so.13" in finding["title"]
    assert "extension-abi-mismatch" not in run.finding_ids()


def test_explain_points_undefined_c10_symbol_at_the_extension(
    tmp_path: Path, torch_site: Path, workdir: Path
) -> None:
    env = extension(tmp_path, torch_site, [USES_REMOVED])
    error = f"ImportError: {env.site_packages}/demo_ext/_C.so: undefined symbol: {NOT_EXPORTED}"
    run = run_doctor(
        "explain", error, "--python", str(env.root), "--no-load", "--format", "json", cwd=workdir
    )
    explained = json.loads(run.stdout)["explain"]
    assert [r["id"] for r in explained["recognised"]] == ["extension-undefined-torch-symbol"]
    assert "extension-abi-mismatch" in explained["confirmed"]


# -- the real torchvision wheels, against nm -D on the same files ------------------------

# A demangled name in torch's namespaces, after an optional return type (template
# functions carry one: "long c10::detail::maybe_wrap_dim_slow<long>(long, long, bool)").
NM_TORCH_NAME = re.compile(r"^(?:[^(<]*?\s)?(?:c10|at|torch|caffe2)::|^aoti_torch_")
NM_SPECIAL = ("vtable for ", "typeinfo for ", "typeinfo name for ")


def _nm(path: Path, *flags: str) -> list[str]:
    out = subprocess.run(["nm", "-D", *flags, str(path)], check=True, capture_output=True)
    return out.stdout.decode().splitlines()


def nm_missing(library: Path, torch_lib: Path) -> tuple[set[str], set[str]]:
    """(torch symbols the object needs, those no torch library defines), by nm -D alone:
    torch's namespaces are read from nm's own demangling (-C), line by line."""
    mangled = _nm(library, "--undefined-only")
    demangled = _nm(library, "--undefined-only", "-C")
    assert len(mangled) == len(demangled)
    wanted: dict[str, str] = {}
    for raw, text in zip(mangled, demangled):
        kind, name = raw.split()[-2:]
        plain = text.split(None, 1)[1]
        for prefix in NM_SPECIAL:
            plain = plain.removeprefix(prefix)
        if NM_TORCH_NAME.match(plain):
            wanted[name.split("@")[0]] = kind
    defined: set[str] = set()
    for lib in torch_lib.glob("lib*.so"):
        if re.match(r"lib(c10|torch|shm|caffe2)", lib.name):
            defined |= {line.split()[-1].split("@")[0] for line in _nm(lib, "--defined-only")}
    missing = {n for n, kind in wanted.items() if kind == "U" and n not in defined}
    return set(wanted), missing


@pytest.mark.parametrize("version", ["0.28.0", "0.29.1"])
def test_torchvision_wheels_are_judged_as_nm_sees_them(
    version: str, tmp_path: Path, torch_site: Path, workdir: Path
) -> None:
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed (.ci/run installs it)")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            str(real_torch_venv_path() / "bin" / "python"),
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "-d",
            str(wheels),
            f"torchvision=={version}",
        ],
        check=True,
        capture_output=True,
    )
    env = overlay_venv(tmp_path / "venv", torch_site)
    uv_install(env, *wheels.glob("*.whl"))
    run = doctor(env, workdir)
    found = {e["name"]: e for e in run.json["facts"]["extensions"]["extensions"]}
    libraries = {Path(lib["path"]).name: lib for lib in found["torchvision"]["libraries"]}
    on_disk = sorted((env.site_packages / "torchvision").glob("*.so"))
    assert sorted(libraries) == [p.name for p in on_disk]
    total_missing = 0
    for path in on_disk:
        wanted, missing = nm_missing(path, torch_site / "torch" / "lib")
        library = libraries[path.name]
        assert library["torch_symbols"] == len(wanted), path.name
        assert library["missing_count"] == len(missing), path.name
        assert {m["name"] for m in library["missing"]} <= missing
        total_missing += len(missing)
    # One cause, one finding: a torchvision whose pin already says it was built for
    # another torch is torch-companion-mismatch's; otherwise the symbols speak.
    companions = [f for f in run.json["findings"] if f["id"] == "torch-companion-mismatch"]
    by_pin = any(c["name"] == "torchvision" for f in companions for c in f["data"]["companions"])
    fired = "extension-abi-mismatch" in run.root_ids()
    assert fired == (total_missing > 0 and not by_pin)
    if by_pin and total_missing:
        # Its missing symbols stay in the report, under the companion mismatch.
        assert run.finding("extension-abi-mismatch")["root"] == "torch-companion-mismatch"
    if version == "0.28.0":
        # measured: c10::cuda::c10_cuda_check_implementation is gone in torch 2.14.1
        assert total_missing > 0 and (fired or by_pin)


SETUP_PY = """
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

setup(
    name="demo-ext",
    version="1.0.0",
    packages=["demo_ext"],
    ext_modules=[CppExtension("demo_ext._C", ["demo_ext/ext.cpp"])],
    cmdclass={"build_ext": BuildExtension},
)
"""


def demo_sdist(directory: Path) -> Path:
    """demo-ext 1.0.0's source: a cpp_extension build, as real extensions do it."""
    import tarfile

    source = directory / "demo-ext-1.0.0"
    (source / "demo_ext").mkdir(parents=True)
    (source / "setup.py").write_text(SETUP_PY)
    (source / "demo_ext" / "__init__.py").write_text("")
    (source / "demo_ext" / "ext.cpp").write_text(USES_EXPORTED)
    (source / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: demo-ext\nVersion: 1.0.0\n")
    archive = directory / "dist" / "demo_ext-1.0.0.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


def test_rebuild_remedy_run_literally_builds_against_the_installed_torch(
    tmp_path: Path, torch_site: Path, workdir: Path
) -> None:
    # Installed: a wheel of demo-ext 1.0.0 built against an older torch (it calls a
    # function torch 2.14.1 no longer exports). Its source release builds against any torch.
    env = extension(tmp_path, torch_site, [USES_EXPORTED, USES_REMOVED])
    sdist = demo_sdist(tmp_path / "source")
    finding = doctor(env, workdir).finding("extension-abi-mismatch")
    (rebuild,) = [r for r in finding["remedies"] if r["summary"].startswith("rebuild")]
    # pip finds the source release where this machine's pip.conf would point it.
    pip_env = {
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(sdist.parent),
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
    }
    subprocess.run(rebuild["text"], shell=True, check=True, capture_output=True, env=pip_env)
    again = doctor(env, workdir)
    assert "extension-abi-mismatch" not in again.finding_ids()
    (found,) = again.json["facts"]["extensions"]["extensions"]
    (library,) = found["libraries"]
    assert library["missing_count"] == 0
    assert Path(library["path"]).name.startswith("_C.cpython-")  # built by cpp_extension


PROJECT_PYPROJECT = """[project]
name = "demo-app"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = ["demo-ext==1.0.0"]
"""


def test_rebuild_in_a_uv_project_run_literally_survives_uv_sync(
    tmp_path: Path, torch_site: Path, workdir: Path
) -> None:
    """A uv project whose lock installed demo-ext's wheel, built against an older torch:
    the remedy is the project's own (a [tool.uv] block, applied by `torch-doctor fix`, then
    the uv command it prints), and a later plain `uv sync` keeps the rebuilt extension."""
    from tests.test_uv_lock_metadata import UV, _uv_env

    if UV is None:
        pytest.skip("uv is not installed")
    links = tmp_path / "links"
    obj = compile_shared(
        "\n".join([USES_EXPORTED, USES_REMOVED]),
        tmp_path / "build" / "_C.so",
        link_dir=torch_site / "torch" / "lib",
        libraries=("c10", "torch_cpu"),
    )
    build_extension_wheel(links, "demo-ext", "1.0.0", {"demo_ext/_C.so": obj})
    sdist = demo_sdist(tmp_path / "source")
    shutil.copy(sdist, links / sdist.name)
    project = tmp_path / "demo-app"
    project.mkdir()
    # Its packages come from a directory only, as an offline mirror would give them.
    (project / "pyproject.toml").write_text(
        PROJECT_PYPROJECT + f'\n[tool.uv]\nno-index = true\nfind-links = ["{links}"]\n'
    )
    env = _uv_env(tmp_path)
    python = real_torch_venv_path() / "bin" / "python"

    def uv(*args: str) -> None:
        done = subprocess.run(
            [str(UV), *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (args, done.stderr)

    uv("venv", "--python", str(python), ".venv")
    venv = FakeEnv(project / ".venv")
    (venv.site_packages / "real_torch.pth").write_text(f"{torch_site}\n")
    uv("sync")

    def check() -> DoctorRun:
        return run_doctor("--format", "json", "--no-load", "--no-redact", cwd=project, env=env)

    broken = check()
    finding = broken.finding("extension-abi-mismatch")
    toml, command = finding["remedies"][:2]
    assert (toml["kind"], toml["target"]) == ("toml", str(project / "pyproject.toml"))
    assert command["text"] == "uv sync --reinstall-package demo-ext --no-cache\n"
    # `torch-doctor fix` applies the block; the printed uv command runs as pasted.
    fixed = run_doctor("fix", "--yes", cwd=project, env=env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    done = subprocess.run(
        ["bash", "-e", "-c", command["text"]],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    healed = check()
    assert "extension-abi-mismatch" not in healed.finding_ids(), healed.json["findings"]
    # The next plain sync keeps the build: the project itself asks for it now.
    uv("sync")
    again = check()
    assert "extension-abi-mismatch" not in again.finding_ids()
    (found,) = again.json["facts"]["extensions"]["extensions"]
    assert Path(found["libraries"][0]["path"]).name.startswith("_C.cpython-")
