"""Property-based tests (hypothesis) of every parser and decoder the doctor owns or feeds.

For each: whatever the input, no exception escapes but the documented one, nothing hangs
(each test has a time limit), and what comes out keeps its promise (the redactor never
lets a password through, the sanitiser never lets a control character through, caps
hold). Example counts are modest: these run in CI on every push.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import string
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from doctor.derive.expectations import parse_requirement
from doctor.fix import FixError, apply_blocks
from doctor.probe import inside
from doctor.probe.elf import elf_sections, read_dynamic
from doctor.probe.fatbin import FatbinError, walk_fatbin
from doctor.probe.load_events import parse_events
from doctor.probe.project import TomlError, load_toml, probe_project
from doctor.probe.text import FIELD_CAP, clean, clean_tree
from doctor.redact import REDACTED, RedactionRules, Redactor
from tests.fatbin_blob import CUBIN, PTX, container, entry

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(120)

UNSAFE = {chr(c) for c in range(0x20) if chr(c) not in "\n\t"} | {"\x7f"}
UNSAFE |= {chr(c) for c in range(0x80, 0xA0)} | set("\u202a\u202b\u202c\u202d\u202e")
UNSAFE |= set("\u2066\u2067\u2068\u2069")


def scratch_file(data: bytes, name: str = "file") -> Path:
    directory = Path(tempfile.mkdtemp(prefix="td-prop-"))
    path = directory / name
    path.write_bytes(data)
    return path


# --- the terminal sanitiser ------------------------------------------------------------------


@PROPERTY
@given(st.text(), st.integers(min_value=1, max_value=200))
def test_clean_never_lets_a_control_character_through_and_holds_its_cap(
    text: str, cap: int
) -> None:
    out = clean(text, cap)
    assert not UNSAFE & set(out)
    kept = out.split("… ", 1)[0] if len(text) > cap else out
    assert len(kept) <= cap
    assert clean(out, 10**9) == out  # cleaning is idempotent


@PROPERTY
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
                    max_leaves=30))  # fmt: skip
def test_clean_tree_cleans_every_string_of_any_json_value(value: object) -> None:
    def strings(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [s for k, v in node.items() for s in (*strings(k), *strings(v))]
        if isinstance(node, list):
            return [s for v in node for s in strings(v)]
        return []

    for text in strings(clean_tree(value)):
        assert not UNSAFE & set(text)


# --- the redactor ----------------------------------------------------------------------------

_USERINFO = st.text(
    alphabet=string.ascii_letters + string.digits + "@:!$&'()*+,;=-._~%", min_size=1
)
_HOST = st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True)
_SCHEME = st.sampled_from(["https", "http", "git+https", "git+ssh", "s3", "ftp", "redis", "svn"])


@PROPERTY
@given(_SCHEME, _USERINFO, _HOST, st.sampled_from(["", "/simple", "/a/b?x=1", "#frag"]),
       st.sampled_from(["", "see ", "UV_INDEX_URL=", "'", "("]))  # fmt: skip
def test_url_userinfo_never_survives_redaction(
    scheme: str, userinfo: str, host: str, tail: str, before: str
) -> None:
    assume("@" in userinfo or ":" in userinfo or len(userinfo) > 3)
    assume(REDACTED not in userinfo)
    url = f"{scheme}://{userinfo}@{host}{tail}"
    out = Redactor(RedactionRules()).text(before + url)
    # All of the userinfo goes, up to its last "@", and nothing else changes.
    assert out == f"{before}{scheme}://{REDACTED}@{host}{tail}"


_COMPONENT = st.text(
    alphabet=string.ascii_lowercase + string.digits + "._-", min_size=1, max_size=8
)


@PROPERTY
@given(st.lists(_COMPONENT, min_size=1, max_size=3), st.lists(_COMPONENT, max_size=3),
       st.lists(_COMPONENT, min_size=1, max_size=3))  # fmt: skip
def test_home_is_replaced_only_as_a_whole_leading_path(
    home_parts: list[str], prefix: list[str], rest: list[str]
) -> None:
    assume(all(p not in (".", "..") for p in home_parts + prefix + rest))
    home = "/" + "/".join(home_parts)
    redactor = Redactor(RedactionRules(homes=(home,)))
    inside_home = home + "/" + "/".join(rest)
    assert redactor.text(inside_home) == "~/" + "/".join(rest)
    elsewhere = "/" + "/".join(prefix) + inside_home
    if prefix and not elsewhere.startswith(home + "/"):
        assert "~" not in redactor.text(elsewhere)
    longer = home + "x/" + "/".join(rest)
    assert "~" not in redactor.text(longer)


# --- METADATA and RECORD (the inside probe's readers) ----------------------------------------


@PROPERTY
@given(st.binary(max_size=4096))
def test_metadata_reader_takes_any_bytes(data: bytes) -> None:
    headers = inside.read_headers(str(scratch_file(data, "METADATA")))
    assert all(isinstance(v, list) for v in headers.values())


@PROPERTY
@given(st.text(max_size=2000))
def test_record_reader_takes_any_text(text: str) -> None:
    try:
        names = inside.record_names(text)
    except Exception as exc:  # the probe reports a csv error as "cannot parse RECORD"
        assert type(exc).__module__ == "_csv", exc
        return
    assert all(isinstance(n, str) for n in names)


@PROPERTY
@given(st.binary(max_size=3000))
def test_check_record_reports_any_record_as_a_fact(data: bytes) -> None:
    directory = Path(tempfile.mkdtemp(prefix="td-prop-"))
    info = directory / "x-1.dist-info"
    info.mkdir()
    (info / "RECORD").write_bytes(data)
    record = inside.check_record({"metadata_dir": str(info), "location": str(directory)})
    assert set(record) >= {"present", "files", "missing_count", "missing", "error"}


# --- requirement strings from the wild -------------------------------------------------------


@PROPERTY
@given(st.text(max_size=200))
def test_requirement_parser_answers_a_requirement_or_none(text: str) -> None:
    result = parse_requirement(text)
    assert result is None or result.name


@PROPERTY
@given(st.from_regex(r"[A-Za-z][A-Za-z0-9._-]{0,20}(\[[a-z,]{0,10}\])?"
                     r"( ?(==|>=|<=|~=|!=)[0-9][0-9.]{0,8}(\+[a-z0-9]{1,6})?)?"
                     r"(; ?(platform_system|python_version|extra) ?== ?\"[A-Za-z0-9.]{0,8}\")?",
                     fullmatch=True))  # fmt: skip
def test_requirement_shaped_strings_parse(text: str) -> None:
    parse_requirement(text)  # no exception, whatever it decides


# --- the TOML readers ------------------------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=2000))
def test_project_toml_reader_raises_only_toml_error(data: bytes) -> None:
    with contextlib.suppress(TomlError):
        load_toml(scratch_file(data, "pyproject.toml"))


_TOML_KEY = st.text(string.ascii_letters, min_size=1, max_size=6)
_TOML_VALUE = st.recursive(
    st.integers() | st.text(max_size=10) | st.booleans(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_TOML_KEY, c, max_size=3),
    max_leaves=12,
)


@PROPERTY
@given(st.dictionaries(st.sampled_from(["project", "tool", "dependency-groups", "package",
                                        "version", "revision"]), _TOML_VALUE, max_size=4),
       st.sampled_from([1, 2, "1", None]))  # fmt: skip
def test_project_probe_reads_any_structure_as_facts_or_an_error(
    document: dict[str, object], version: object
) -> None:
    import tomlkit

    directory = Path(tempfile.mkdtemp(prefix="td-prop-"))
    text = tomlkit.dumps(document)
    (directory / "pyproject.toml").write_text(text)
    lock = dict(document)
    if version is not None:
        lock["version"] = version
    (directory / "uv.lock").write_text(tomlkit.dumps(lock))
    facts = probe_project(directory, "--project")  # never raises
    assert facts.root == str(directory)


@PROPERTY
@given(st.text(max_size=500))
def test_fix_merge_raises_only_fix_error(text: str) -> None:
    block = '[[tool.uv.dependency-metadata]]\nname = "torch"\nversion = "2.14.1"\n'
    try:
        out = apply_blocks(text, [block])
    except FixError:
        return
    assert "dependency-metadata" in out


# --- ELF readers and the fat binary walker ---------------------------------------------------

_SEED = shutil.which("true")


@pytest.mark.skipif(_SEED is None, reason="no /bin/true to mutate")
@PROPERTY
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=4095), st.integers(0, 255)),
                max_size=16),
       st.integers(min_value=0, max_value=1 << 16))  # fmt: skip
def test_elf_readers_take_any_mutation_of_a_real_elf_file(
    mutations: list[tuple[int, int]], cut: int
) -> None:
    assert _SEED is not None
    data = bytearray(Path(os.path.realpath(_SEED)).read_bytes())
    for offset, value in mutations:
        if offset < len(data):
            data[offset] = value
    path = scratch_file(bytes(data[: max(cut, 64)]), "libmutant.so")
    dynamic = read_dynamic(str(path))  # never raises: an error is in the result
    assert dynamic.path == str(path)
    with open(path, "rb") as stream:
        try:
            elf_sections(stream)
        except Exception as exc:  # read_fatbin_summary turns these into FatbinError
            from elftools.common.exceptions import ELFError

            assert isinstance(exc, (ELFError, ValueError, __import__("struct").error)), exc


_ENTRY = st.builds(
    lambda kind, arch, size: entry(kind, arch, b"\0" * size),
    st.sampled_from([PTX, CUBIN, 0, 7]),
    st.integers(0, 1200),
    st.integers(0, 64),
)


@PROPERTY
@given(st.lists(st.lists(_ENTRY, max_size=4), max_size=3),
       st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
       st.integers(0, 64))  # fmt: skip
def test_fatbin_walker_ends_and_raises_only_fatbin_error(
    containers: list[list[bytes]], mutations: list[tuple[int, int]], padding: int
) -> None:
    data = bytearray(b"".join(container(c) + b"\0" * padding for c in containers))
    for offset, value in mutations:
        if offset < len(data):
            data[offset] = value
    try:
        for _ in walk_fatbin(bytes(data), 0, len(data)):
            pass
    except (FatbinError, __import__("struct").error):
        pass


# --- the load probe's event protocol ---------------------------------------------------------


_EVENT_LINES = st.sampled_from(
    [
        '{"event": "begin"}',
        '{"event": "end", "step": 1}',
        '{"event": "result", "libraries": []}',
        "[]",
        "{",
        '{"event": "begin", "step": "a", "requested": "\\u001b"}',
    ]
)


@PROPERTY
@given(st.lists(st.one_of(st.text(max_size=80), _EVENT_LINES), max_size=20))
def test_load_events_parser_skips_what_is_not_an_event(lines: list[str]) -> None:
    for event in parse_events("\n".join(lines)):
        for value in vars(event).values():
            if isinstance(value, str):
                assert not UNSAFE & set(value)


def test_field_cap_is_what_the_docs_say() -> None:
    assert FIELD_CAP == 4096
    assert sys.maxsize > FIELD_CAP


# --- uv.lock as `torch-doctor lock` reads it -------------------------------------------------

_LOCK_SCALAR = st.integers() | st.text(max_size=12) | st.booleans() | st.floats(allow_nan=False)
_LOCK_FIELD = st.recursive(
    _LOCK_SCALAR,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_TOML_KEY, c, max_size=3),
    max_leaves=8,
)
_WHEEL_NAME = st.sampled_from(
    [
        "torch-2.6.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "torch-2.6.0-cp311-cp311-win_amd64.whl",
        "torch-2.6.0-py3-none-any.whl",
        "torch-2.6.0.tar.gz",
        "not a wheel.whl",
        "",
    ]
)
_LOCK_WHEEL = st.fixed_dictionaries(
    {},
    optional={
        "url": _WHEEL_NAME.map(lambda n: f"https://example.org/f/{n}") | _LOCK_FIELD,
        "path": _LOCK_FIELD,
        "hash": st.just("sha256:" + "0" * 64) | _LOCK_FIELD,
        "size": st.integers() | _LOCK_FIELD,
    },
)
_LOCK_PACKAGE = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["torch", "triton", "numpy", "Torch_Vision"]) | _LOCK_FIELD,
        "version": st.just("2.6.0") | _LOCK_FIELD,
        "source": st.just({"registry": "https://example.org/simple"}) | _LOCK_FIELD,
        "dependencies": st.lists(
            st.fixed_dictionaries(
                {}, optional={"name": st.just("filelock") | _LOCK_FIELD, "marker": _LOCK_FIELD}
            )
            | _LOCK_FIELD,
            max_size=3,
        )
        | _LOCK_FIELD,
        "wheels": st.lists(_LOCK_WHEEL | _LOCK_FIELD, max_size=3) | _LOCK_FIELD,
        "resolution-markers": st.lists(st.text(max_size=20), max_size=2) | _LOCK_FIELD,
    },
)
_LOCK_DOCUMENT = st.fixed_dictionaries(
    {"version": st.just(1) | _LOCK_FIELD},
    optional={
        "requires-python": st.just(">=3.9") | _LOCK_FIELD,
        "supported-markers": st.lists(st.text(max_size=20), max_size=2) | _LOCK_FIELD,
        "package": st.lists(_LOCK_PACKAGE | _LOCK_FIELD, max_size=4) | _LOCK_FIELD,
    },
)


@PROPERTY
@given(_LOCK_DOCUMENT)
def test_lock_reader_takes_any_structure_as_a_lock_or_lock_file_error(
    document: dict[str, object],
) -> None:
    import tomlkit

    from doctor.probe.lockfile import LockFileError, read_lock

    path = scratch_file(tomlkit.dumps(document).encode(), "uv.lock")
    try:
        lock = read_lock(path)
    except LockFileError:
        return
    # What `torch-doctor lock` does with it next: never an exception either.
    for package in (*lock.family(), *lock.platform_specific()):
        for wheel in lock.wheels_of(package):
            assert isinstance(wheel.filename, str) and isinstance(wheel.url, str)
            assert wheel.size is None or (type(wheel.size) is int and wheel.size >= 0)
    for package in lock.packages:
        assert isinstance(package.name, str)
        assert all(isinstance(d.marker, (str, type(None))) for d in package.dependencies)


@pytest.mark.parametrize(
    "text",
    [
        "version = 1\npackage = 5\n",
        "version = 1\n[[package]]\nname = 'torch'\nwheels = 5\ndependencies = 5\n",
        "version = 1\n[[package]]\nname = 'torch'\nwheels = [5, {url = 7}, {size = true}]\n",
        "version = true\n",
        'version = 1\nrequires-python = 5\n[[package]]\nname = "torch"\nversion = 2\n',
        'version = 1\n[[package]]\nname = "torch"\nwheels = [{url = "http://[x/torch.whl"}]\n',
    ],
)
def test_lock_reader_examples_that_once_raised_type_error(text: str) -> None:
    from doctor.probe.lockfile import LockFileError, read_lock

    try:
        lock = read_lock(scratch_file(text.encode(), "uv.lock"))
    except LockFileError:
        return
    lock.family()
    lock.platform_specific()


def test_lock_reader_cleans_the_strings_it_keeps() -> None:
    from doctor.probe.lockfile import read_lock

    text = (
        'version = 1\n[[package]]\nname = "torch\\u001b[2J"\nversion = "2.6.0"\n'
        'source = { registry = "https://example.org/simple\\u001b]0;x\\u0007" }\n'
        'wheels = [{ url = "https://example.org/f/torch-2.6.0-py3-none-any.whl\\u202e" }]\n'
    )
    lock = read_lock(scratch_file(text.encode(), "uv.lock"))
    [package] = lock.packages
    [wheel] = lock.wheels
    for value in (package.name, wheel.url, wheel.registry or "", wheel.filename):
        assert not UNSAFE & set(value), value
