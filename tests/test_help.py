"""`torch-doctor --help` shows the options people type first; every command has a
one-line description and an example."""

from __future__ import annotations

import pytest

from doctor.cli import COMMANDS, main


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_shows_the_check_options(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys)
    for option in ("--python", "--project", "--format", "--output", "--verbose", "--no-redact"):
        assert option in text
    assert "{terminal,json,markdown}" in text
    for command in COMMANDS:
        assert f"\n    {command} " in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_an_example(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = help_text(capsys, command)
    description = text.split("\n\n")[1]
    assert description.endswith(".") and "\n" not in description
    example = text.split("example:\n", 1)[1]
    assert example.lstrip().startswith("torch-doctor") or "| torch-doctor" in example


def test_check_options_given_without_a_command_still_mean_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Shown on the top-level help, parsed by `check`: a bad value is check's usage error.
    with pytest.raises(SystemExit) as exited:
        main(["--format", "yaml"])
    assert exited.value.code == 2
    assert "check: error: argument --format" in capsys.readouterr().err
