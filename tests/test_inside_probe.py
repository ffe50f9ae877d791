"""The inside probe's readers (stdlib code run by the inspected interpreter)."""

from __future__ import annotations

from pathlib import Path

from doctor.probe import inside


def test_metadata_headers_stop_at_the_body_and_ignore_case(tmp_path: Path) -> None:
    metadata = tmp_path / "METADATA"
    metadata.write_bytes(
        b"Metadata-Version: 2.4\r\nName: torch\r\nVERSION: 2.14.1\r\n"
        b"Requires-Dist: filelock\r\nrequires-dist: nvidia-cudnn-cu13==9.24.0.43;\r\n"
        b'  platform_system == "Linux"\r\n'
        b"License: BSD\r\n\tsecond line\r\n\r\n"
        b"Requires-Dist: not-a-header-this-is-the-long-description\r\n"
    )
    headers = inside.read_headers(str(metadata))
    assert inside.first(headers, "name") == "torch"
    assert inside.first(headers, "version") == "2.14.1"
    assert headers["requires-dist"] == [
        "filelock",
        'nvidia-cudnn-cu13==9.24.0.43; platform_system == "Linux"',
    ]
    assert headers["license"] == ["BSD second line"]


def test_record_rows_outside_site_packages_are_resolved(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "site-packages"
    (site / "pkg-1.0.dist-info").mkdir(parents=True)
    (site / "pkg").mkdir()
    (site / "pkg" / "__init__.py").write_text("")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("")
    (site / "pkg-1.0.dist-info" / "RECORD").write_text(
        "pkg/__init__.py,,\npkg/gone.so,,\n../../bin/tool,,\n../../bin/gone,,\n"
        "pkg/__pycache__/x.cpython-311.pyc,,\ntop.py,,\n"
    )
    record = inside.check_record(
        {"metadata_dir": str(site / "pkg-1.0.dist-info"), "location": str(site)}
    )
    assert record["files"] == 5  # bytecode is not counted
    assert record["missing"] == ["pkg/gone.so", "../../bin/gone", "top.py"]
