"""Property-based tests (hypothesis) of every parser and decoder the doctor owns or feeds.

For each: whatever the input, no exception escapes but the documented one, nothing hangs
(each test has a time limit), and what comes out keeps its promise (the redactor never
lets a password through, the sanitiser never lets a control character through, caps
hold). Example counts are modest: these run in CI on every push.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import string
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from doctor.compare import REPORT_SCHEMA, NodeSummary, Problem, summarise, summarise_report
from doctor.derive.expectations import parse_requirement
from doctor.fix import FixError, apply_blocks
from doctor.probe import inside
from doctor.probe.elf import elf_sections, read_dynamic
from doctor.probe.fatbin import FatbinError, walk_fatbin
from doctor.probe.index_client import FetchError, Response, _from_html, _from_json
from doctor.probe.load_events import parse_events
from doctor.probe.project import TomlError, load_toml, probe_project
from doctor.probe.symbols import TABLE_ERRORS, SymbolTableError, open_symbol_table
from doctor.probe.text import FIELD_CAP, clean, clean_tree
from doctor.probe.wheel_metadata import platform_of
from doctor.redact import REDACTED, RedactionRules, Redactor
from tests.fatbin_blob import CUBIN, PTX, container, entry

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(120)

UNSAFE = {chr(c) for c in range(0x20) if chr(c) not in "\n\t"} | {"\x7f"}
UNSAFE |= {chr(c) for c in range(0x80, 0xA0)} | set("\u202a\u202b\u202c\u202d\u202e")
UNSAFE |= set("\u2066\u2067\u2068\u2069") | set("\u200e\u200f\u061c\u2028\u2029")


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


# --- the dynamic symbol reader ---------------------------------------------------------------

# A shared object with what the symbol reader walks: a GNU and a SysV hash table, defined
# versions (a version script), needed versions (glibc's), NEEDED entries, undefined, weak
# and torch-looking names.
_SYMBOLS_SOURCE = """
#include <unistd.h>
extern void _ZN3c104cuda3fooEv(void);
__attribute__((weak)) void weak_one(void);
int exported_a(int x) { return x + (int)getpid(); }
int _ZN3c106detail3barEv(void) { _ZN3c104cuda3fooEv(); if (weak_one) weak_one(); return 1; }
"""
_SYMBOL_NAMES = ("exported_a", "_ZN3c106detail3barEv", "_ZN3c104cuda3fooEv", "weak_one", "gone")


@functools.cache
def _symbols_seed() -> bytes | None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    directory = Path(tempfile.mkdtemp(prefix="td-prop-symbols-"))
    (directory / "seed.c").write_text(_SYMBOLS_SOURCE)
    (directory / "seed.map").write_text("SEED_1.0 { global: exported_*; _ZN*; local: *; };\n")
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-Wl,--hash-style=both",
         f"-Wl,--version-script={directory / 'seed.map'}", "-Wl,-soname,libseed.so",
         "-o", str(directory / "libseed.so"), str(directory / "seed.c")],
        check=True, capture_output=True,
    )  # fmt: skip
    return (directory / "libseed.so").read_bytes()


# What a reader of a table may raise: SymbolTableError, or (once the headers parsed) one
# of symbols.TABLE_ERRORS; doctor/probe/extensions.py turns each into an "unreadable" fact.
_TABLE_ERRORS = (SymbolTableError, *TABLE_ERRORS)


def test_the_symbol_seed_reads_as_built() -> None:
    seed = _symbols_seed()
    if seed is None:
        pytest.skip("no C compiler (cc) to build the seed library")
    with open_symbol_table(str(scratch_file(seed, "libseed.so"))) as table:
        assert table.lookup("exported_a") == (True, "SEED_1.0")
        assert table.lookup("gone") == (False, None)
        undefined = {s.name for s in table.symbols() if not s.defined}
        assert "_ZN3c104cuda3fooEv" in undefined and "weak_one" in undefined
        assert any(s.version_file == "libc.so.6" for s in table.symbols() if not s.defined)


@functools.cache
def _symbols_regions() -> tuple[tuple[int, int], ...]:
    """Where the reader reads: the headers and dynamic tables, then the dynamic section."""
    import io

    from elftools.elf.elffile import ELFFile

    seed = _symbols_seed()
    assert seed is not None
    sections = {s.name: s for s in ELFFile(io.BytesIO(seed)).iter_sections()}
    tables = [".hash", ".gnu.hash", ".dynsym", ".dynstr", ".gnu.version", ".gnu.version_d",
              ".gnu.version_r"]  # fmt: skip
    end = max(sections[n]["sh_offset"] + sections[n]["sh_size"] for n in tables if n in sections)
    dynamic = sections[".dynamic"]
    return (0, end), (dynamic["sh_offset"], dynamic["sh_offset"] + dynamic["sh_size"])


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from([0, 1, 1, 2]), st.integers(0, 1 << 16),
                          st.integers(0, 255)), min_size=1, max_size=12),
       st.integers(min_value=0, max_value=1 << 15))  # fmt: skip
def test_symbol_reader_takes_any_mutation_of_a_real_shared_object(
    mutations: list[tuple[int, int, int]], cut: int
) -> None:
    seed = _symbols_seed()
    if seed is None:
        pytest.skip("no C compiler (cc) to build the seed library")
    data = bytearray(seed)
    regions = _symbols_regions()
    for region, offset, value in mutations:
        # Mostly where the reader reads (headers, tables, the dynamic section), some anywhere.
        start, end = regions[region] if region < len(regions) else (0, len(data))
        data[start + offset % (end - start)] = value
    path = scratch_file(bytes(data[: max(cut, 64)] if cut < len(data) else data), "libm.so")
    started = time.monotonic()
    try:
        table = open_symbol_table(str(path))
    except SymbolTableError:
        return
    with table:
        for step in (
            lambda: table.needed,
            lambda: [(s.name, s.version) for s in table.symbols()],
            lambda: [table.lookup(n) for n in _SYMBOL_NAMES],
            lambda: table.strings_contain((b"_ZN3c10", b"aoti_torch_")),
        ):
            with contextlib.suppress(*_TABLE_ERRORS):
                step()
    assert time.monotonic() - started < 5


def test_a_string_table_size_past_any_file_is_read_to_the_files_end() -> None:
    seed = _symbols_seed()
    if seed is None:
        pytest.skip("no C compiler (cc) to build the seed library")
    data = bytearray(seed)
    start, end = _symbols_regions()[1]
    for offset in range(start, end, 16):  # Elf64_Dyn: d_tag, d_val
        tag, _value = struct.unpack_from("<qQ", data, offset)
        if tag == 10:  # DT_STRSZ
            struct.pack_into("<qQ", data, offset, tag, 1 << 63)
    with open_symbol_table(str(scratch_file(bytes(data), "libhuge.so"))) as table:
        assert table.strings_contain((b"exported_a",))
        assert not table.strings_contain((b"not in the table",))


# --- compare: any JSON where a report should be --------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=25,
)
_NODE = st.fixed_dictionaries(
    {},
    optional={
        "identity": st.fixed_dictionaries(
            {}, optional={"host": _JSON, "launcher_ids": _JSON | st.dictionaries(st.text(), _JSON)}
        )
        | _JSON,
        "variables": st.dictionaries(st.text(max_size=10), _JSON, max_size=3) | _JSON,
        "nccl": _JSON,
    },
)
_REPORT = st.fixed_dictionaries(
    {"schema": st.just(REPORT_SCHEMA) | _JSON},
    optional={
        "version": _JSON,
        "verdict": _JSON,
        "exit_code": _JSON | st.sampled_from([float("inf"), float("nan"), 1e308, 10**400]),
        "findings": st.lists(st.dictionaries(st.sampled_from(["id", "severity", "title", "root"]),
                                             _JSON), max_size=3) | _JSON,
        "facts": st.fixed_dictionaries({}, optional={
            "node": _NODE | _JSON, "torch": _JSON, "machine": _JSON, "distributions": _JSON,
            "interpreter": _JSON, "platform": _JSON}) | _JSON,
    },
)  # fmt: skip


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _strings(getattr(value, f.name))


@PROPERTY
@given(_REPORT | _JSON, st.text(max_size=20))
def test_compare_summarises_any_json_as_a_node_or_a_problem(data: object, source: str) -> None:
    summary = summarise(data, source)
    assert isinstance(summary, (NodeSummary, Problem))
    for text in _strings(summary):
        assert not UNSAFE & set(text)


@PROPERTY
@given(st.binary(max_size=2000) | _REPORT.map(lambda r: json.dumps(r).encode()))
def test_compare_reads_any_file_as_a_node_or_a_problem(data: bytes) -> None:
    assert isinstance(summarise_report(scratch_file(data, "r.json")), (NodeSummary, Problem))


def test_compare_takes_nesting_past_any_limit() -> None:
    deep: object = "x"
    for _ in range(100_000):  # built without recursion; walked only by the code under test
        deep = [deep]
    report = {"schema": REPORT_SCHEMA, "facts": {"node": {"identity": {"host": deep}}}}
    for data in (deep, report):
        assert isinstance(summarise(data, "deep.json"), Problem)
    text = "[" * 100_000 + "]" * 100_000
    assert isinstance(summarise_report(scratch_file(text.encode(), "deep.json")), Problem)


# --- the index pages and wheel file names `torch-doctor lock` reads ------------------------

_PAGE_URLS = ["https://i.example/simple/torch/", "http://[::1]/s/", "file:///x/"]
_HTML_PIECES = st.sampled_from(
    ['<a href="', '">', "</a>", '<a href="x.whl#sha256=', "0" * 64, '" data-core-metadata="',
     "sha256=", '" data-dist-info-metadata', "http://[", "//h/", "../", "%", "%zz", "<!", "<![",
     "<!--", "<?", "&#x110000;", "&amp", "<a", " href=", "'", "\x00", "\u202e", "torch-2.6.0+cu126"
     "-cp311-cp311-manylinux_2_28_x86_64.whl", "<script>", "</"]
)  # fmt: skip


@PROPERTY
@given(st.lists(_HTML_PIECES | st.text(max_size=20), max_size=30), st.sampled_from(_PAGE_URLS))
def test_index_html_pages_give_files_or_fetch_error(pieces: list[str], url: str) -> None:
    page = Response(url, 200, {}, "".join(pieces).encode("utf-8", "surrogatepass"))
    try:
        files = _from_html(page)
    except FetchError:
        return
    for file in files:
        assert isinstance(file.filename, str) and isinstance(file.url, str)
        assert file.sha256 is None or isinstance(file.sha256, str)


_PEP691_FILE = st.fixed_dictionaries(
    {"url": _JSON | st.sampled_from(["x.whl", "http://[", "https://h/a/b.whl#sha256=" + "a" * 64])},
    optional={"filename": _JSON, "hashes": _JSON | st.dictionaries(st.just("sha256"), _JSON),
              "core-metadata": _JSON, "dist-info-metadata": _JSON},
)  # fmt: skip


@PROPERTY
@given(st.binary(max_size=300)
       | _JSON.map(lambda v: json.dumps(v).encode())
       | st.fixed_dictionaries({"files": st.lists(_PEP691_FILE, max_size=4) | _JSON}).map(
           lambda v: json.dumps(v).encode()))  # fmt: skip
def test_index_json_pages_give_files_or_fetch_error(body: bytes) -> None:
    try:
        files = _from_json(Response("https://i.example/simple/torch/", 200, {}, body))
    except FetchError:
        return
    for file in files:
        assert isinstance(file.filename, str) and isinstance(file.url, str)
        assert file.sha256 is None or isinstance(file.sha256, str)
        assert file.metadata_sha256 is None or isinstance(file.metadata_sha256, str)


def test_index_json_nested_past_any_limit_is_a_fetch_error() -> None:
    body = b'{"files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(FetchError):
        _from_json(Response("https://i.example/simple/torch/", 200, {}, body))


@PROPERTY
@given(st.text(max_size=80)
       | st.from_regex(r"[a-z_]{1,8}-[0-9a-z.+!]{1,12}(-[0-9][a-z]*)?-(cp|pp|py)[0-9]{0,3}"
                       r"-[a-z0-9_]{1,8}-[a-z0-9_.]{1,30}\.whl", fullmatch=True),
       st.none() | st.text(max_size=20) | st.sampled_from([">=3.10", "==3.9.*"]))  # fmt: skip
def test_platform_of_answers_a_platform_or_none(name: str, requires_python: str | None) -> None:
    found = platform_of(name, requires_python)
    if found is not None:
        label, python, environment = found
        assert isinstance(label, str)
        assert python is None or isinstance(python, str)
        assert all(isinstance(v, str) for v in environment.values())


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
