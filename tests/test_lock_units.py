"""Pure parts of `torch-doctor lock`: the per-platform remedy, wheel platforms, lock reading."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from doctor.checks.lock_metadata import merged_requires_dist
from doctor.facts.lock_metadata import LockedWheel, WheelMetadata
from doctor.probe.lockfile import LockFileError, read_lock
from doctor.probe.wheel_metadata import platform_of
from tests.factory import run_doctor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found]


def _wheel(filename: str, requires: tuple[str, ...]) -> WheelMetadata:
    label, python, environment = platform_of(filename, None) or ("?", None, {})
    wheel = LockedWheel("demo", "1.0", filename, f"https://x/{filename}", "https://x", None)
    return WheelMetadata(wheel, label, python, environment, via="cache", requires_dist=requires)


@pytest.mark.parametrize(
    ("filename", "label", "python"),
    [
        ("torch-2.6.0+cu126-cp311-cp311-manylinux_2_28_x86_64.whl", "linux x86_64", "3.11"),
        ("torch-2.6.0-cp312-cp312-manylinux2014_aarch64.whl", "linux aarch64", "3.12"),
        ("torch-2.6.0+cu126-cp311-cp311-win_amd64.whl", "win32 AMD64", "3.11"),
        ("torch-2.6.0-cp313-none-macosx_11_0_arm64.whl", "darwin arm64", "3.13"),
        ("filelock-3.17.0-py3-none-any.whl", "any", None),
    ],
)
def test_a_wheel_serves_the_platform_its_tags_name(
    filename: str, label: str, python: str | None
) -> None:
    served = platform_of(filename, ">=3.9")
    assert served is not None and served[:2] == (label, python)


def test_a_requirement_only_some_platforms_declare_gets_their_marker() -> None:
    x86 = _wheel("demo-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", ("a", "b>=1", "c==2"))
    arm = _wheel("demo-1.0-cp311-cp311-manylinux_2_28_aarch64.whl", ("a", "b>=1"))
    win = _wheel("demo-1.0-cp311-cp311-win_amd64.whl", ("a", "c==2"))
    merged = merged_requires_dist([x86, arm, win])
    assert merged == [
        "a",
        "b>=1; (sys_platform == 'linux' and platform_machine == 'x86_64') or "
        "(sys_platform == 'linux' and platform_machine == 'aarch64')",
        "c==2; (sys_platform == 'linux' and platform_machine == 'x86_64') or "
        "(sys_platform == 'win32' and platform_machine == 'AMD64')",
    ]


def test_a_requirement_whose_own_marker_already_excludes_the_others_is_kept_as_written() -> None:
    pin = 'nvidia-cudnn-cu12==9.5.1.17; platform_system == "Linux" and platform_machine == "x86_64"'
    x86 = _wheel("demo-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", ("a", pin))
    arm = _wheel("demo-1.0-cp311-cp311-manylinux_2_28_aarch64.whl", ("a",))
    assert merged_requires_dist([x86, arm]) == ["a", pin]


LOCK = """\
version = 1
revision = 3
requires-python = ">=3.11"

[[package]]
name = "torch"
version = "2.6.0"
source = {{ registry = "https://example.org/simple" }}
wheels = [
    {{ url = "{f}/torch-2.6.0-cp311-cp311-manylinux_2_28_x86_64.whl", hash = "{h}", size = 10 }},
]

[[package]]
name = "numpy"
version = "2.2.0"
source = {{ registry = "https://example.org/simple" }}
wheels = [
    {{ url = "{f}/numpy-2.2.0-cp311-cp311-manylinux_2_28_x86_64.whl", hash = "sha256:{a}" }},
    {{ url = "{f}/numpy-2.2.0-cp311-cp311-win_amd64.whl", hash = "sha256:{a}" }},
]

[[package]]
name = "filelock"
version = "3.17.0"
source = {{ registry = "https://example.org/simple" }}
wheels = [
    {{ url = "{f}/filelock-3.17.0-py3-none-any.whl", hash = "sha256:{a}" }},
]
"""


def test_the_lock_reader_finds_the_family_and_the_platform_specific_packages(
    tmp_path: Path,
) -> None:
    path = tmp_path / "uv.lock"
    path.write_text(LOCK.format(a="0" * 64, h="sha256:" + "0" * 64, f="https://example.org/f"))
    tomllib.loads(path.read_text())
    lock = read_lock(path)
    assert [p.name for p in lock.family()] == ["torch"]
    assert [p.name for p in lock.platform_specific()] == ["numpy"]
    [wheel] = lock.wheels_of(lock.family()[0])
    assert wheel.sha256 == "0" * 64 and wheel.size == 10
    assert wheel.registry == "https://example.org/simple"


@pytest.mark.parametrize("text", ["version = 2\n", "revision = 1\n", "version = 1\n[[package\n"])
def test_a_lock_of_another_version_or_broken_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "uv.lock"
    path.write_text(text)
    with pytest.raises(LockFileError, match=r"uv\.lock"):
        read_lock(path)


@pytest.mark.timeout(10)
def test_the_metadata_cache_reads_its_files_like_any_other(tmp_path: Path) -> None:
    """A FIFO or an oversized file where a cached METADATA should be is a miss (the index is
    asked again), never a blocked or flooded read."""
    import os

    from doctor.probe.files import CAPS
    from doctor.probe.wheel_metadata import CACHE_ENV, MetadataCache

    cache = MetadataCache({CACHE_ENV: str(tmp_path)})
    cache.directory.mkdir(parents=True)
    fifo, big, good = "1" * 64, "2" * 64, "3" * 64
    os.mkfifo(cache.directory / f"{fifo}.METADATA")
    with open(cache.directory / f"{big}.METADATA", "wb") as out:
        out.truncate(CAPS["METADATA"] + 1)
    cache.put(good, b"Metadata-Version: 2.1\nName: torch\n")
    assert cache.get(fifo) is None and cache.get(big) is None
    assert cache.get(good) == b"Metadata-Version: 2.1\nName: torch\n"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@ss@host.example/simple", "https://host.example/simple"),
        ("http://u:p@[::1]:8080/simple", "http://[::1]:8080/simple"),
        ("http://u:p@host:99999/simple", "http://host:99999/simple"),  # a port out of range
        ("http://u:p@[x/simple", "http://[x/simple"),  # no parser takes it
        ("https://host.example/simple", "https://host.example/simple"),
    ],
)
def test_public_url_drops_the_userinfo_of_any_url(url: str, shown: str) -> None:
    from doctor.probe.index_client import public_url

    assert public_url(url) == shown


def test_a_lock_without_torch_does_not_claim_its_wheels_were_checked(tmp_path: Path) -> None:
    """A project that locks no torch-family package: nothing was read, and the output says
    so and how to check other packages, instead of "uv.lock records what every checked
    wheel declares" (exit 0 all the same: a CI job on such a project has nothing to fail)."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "0.1"\nrequires-python = ">=3.11"\ndependencies = []\n'
    )
    (tmp_path / "uv.lock").write_text(
        'version = 1\nrevision = 5\nrequires-python = ">=3.11"\n\n'
        '[[package]]\nname = "x"\nversion = "0.1"\nsource = { virtual = "." }\n'
    )
    run = run_doctor(
        "lock", "--project", str(tmp_path), env={"TORCH_DOCTOR_CACHE_DIR": str(tmp_path / "c")}
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "records what every checked wheel declares" not in run.stdout
    assert "No wheel was checked: uv.lock locks no torch-family package" in run.stdout
    assert "--package NAME" in run.stdout and "--all" in run.stdout
