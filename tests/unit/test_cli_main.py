"""`tipline`'s entry point: one sentence and the right exit code, whatever the input holds."""

from __future__ import annotations

import pytest

from pipeline import cli


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["tipline", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out = capsys.readouterr()
    return int(exited.value.code or 0), out.out + out.err


def test_input_that_looks_like_markup_is_quoted_as_typed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "[/]" closed a Rich markup tag that was never opened: a traceback instead of the sentence."""
    code, said = _run(monkeypatch, capsys, "privacy", "erase", "[/]")
    assert code == 1
    assert "'[/]' is not a report id" in said
    assert "Traceback" not in said
    code, said = _run(monkeypatch, capsys, "privacy", "erase", "[red]x")
    assert "'[red]x' is not a report id" in said


def test_a_commands_exit_code_reaches_the_shell(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """typer.Exit(1) inside a command was returned by click (no standalone mode) and dropped: exit 0."""
    code, said = _run(monkeypatch, capsys, "route", "locate", "--demo", "http:///x")
    assert code == 1
    assert "not a URL this tipline takes" in said


def test_a_bad_option_value_names_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """typer's own copy of click raised a BadParameter that is not click's: it was shown as
    "BadParameter: Input should be greater than or equal to 0", without the option."""
    code, said = _run(
        monkeypatch, capsys, "intake", "phone", "-y", "--description", "x", "--victim-age", "-1"
    )
    assert code == 2
    assert "Invalid value for '--victim-age'" in said
    assert "Traceback" not in said


def test_a_malformed_database_url_is_named_and_not_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline import bootstrap

    monkeypatch.setenv("DATABASE_URL", "garbage:://secret-password@x")
    bootstrap.settings.cache_clear()
    try:
        code, said = _run(monkeypatch, capsys, "privacy", "erase", "00000000-0000-0000-0000-000000000000")
    finally:
        bootstrap.settings.cache_clear()
    assert code == 2
    assert "DATABASE_URL is not a connection string PostgreSQL can read" in said
    assert "secret-password" not in said
