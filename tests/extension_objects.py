"""Small C++ extensions of torch, compiled by the tests with the system compiler.

Each is a real shared object that NEEDs torch's libc10.so and libtorch_cpu.so and calls
into torch's C++ API by its real signatures, so its undefined symbols are the mangled
names g++ emits, exactly as a cpp_extension build would leave them:

- ``c10::detail::torchCheckFail(const char*, const char*, unsigned, const std::string&)``,
  which torch 2.14.1 exports (behind TORCH_CHECK);
- ``c10::cuda::c10_cuda_check_implementation(int, const char*, const char*, unsigned,
  bool)``, which torchvision 0.28.0 needs and torch 2.14.1 no longer exports.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.factory import _record_hash

EXPORTED = (
    "_ZN3c106detail14torchCheckFailEPKcS2_jRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
)
NOT_EXPORTED = "_ZN3c104cuda29c10_cuda_check_implementationEiPKcS2_jb"
NOT_EXPORTED_DEMANGLED = (
    "c10::cuda::c10_cuda_check_implementation(int, char const*, char const*, unsigned int, bool)"
)

USES_EXPORTED = """
#include <string>
namespace c10 { namespace detail {
[[noreturn]] void torchCheckFail(const char*, const char*, unsigned int, const std::string&);
} }
extern "C" void td_check(int ok) {
  if (!ok) c10::detail::torchCheckFail("td_check", __FILE__, __LINE__, std::string("not ok"));
}
"""

USES_REMOVED = """
namespace c10 { namespace cuda {
void c10_cuda_check_implementation(int, const char*, const char*, unsigned int, bool);
} }
extern "C" void td_cuda_check(int error) {
  c10::cuda::c10_cuda_check_implementation(error, __FILE__, "td_cuda_check", __LINE__, true);
}
"""

# What torch's libraries define, for stand-in torch libraries (fast tests without torch).
TORCH_DEFINES = """
#include <string>
namespace c10 { namespace detail {
[[noreturn]] void torchCheckFail(const char*, const char*, unsigned int, const std::string& m) {
  throw m;
}
} }
"""


def compiler() -> str:
    found = shutil.which("g++")
    if found is None:
        pytest.skip("g++ is not installed (.ci/run installs it)")
    return found


def compile_shared(
    source: str,
    output: Path,
    *,
    link_dir: Path | None = None,
    libraries: Sequence[str] = (),
    soname: str | None = None,
    flags: Sequence[str] = (),
) -> Path:
    """Compile C++ ``source`` into the shared object ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    source_file = output.with_suffix(".cpp")
    source_file.write_text(source)
    argv = [compiler(), "-shared", "-fPIC", "-O1", *flags, str(source_file), "-o", str(output)]
    if soname:
        argv.append(f"-Wl,-soname,{soname}")
    if link_dir is not None:
        argv += [f"-L{link_dir}", "-Wl,--no-as-needed"]
    argv += [f"-l{name}" for name in libraries]
    subprocess.run(argv, check=True, capture_output=True)
    source_file.unlink()
    return output


def build_extension_wheel(
    directory: Path,
    name: str,
    version: str,
    objects: Mapping[str, Path],
    *,
    requires_dist: Sequence[str] = (),
    tag: str = "cp311-cp311-linux_x86_64",
) -> Path:
    """A platform wheel holding the compiled objects (paths relative to site-packages)."""
    dist = name.replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    members: dict[str, bytes] = {path: obj.read_bytes() for path, obj in objects.items()}
    package = next(iter(objects)).split("/")[0]
    members.setdefault(f"{package}/__init__.py", b"")
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires_dist]
    members[f"{dist_info}/METADATA"] = ("\n".join(lines) + "\n\n").encode()
    members[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: torch-doctor-tests\nRoot-Is-Purelib: false\nTag: {tag}\n"
    ).encode()
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in members.items())
    members[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path
