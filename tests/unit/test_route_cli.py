"""`tipline route locate` picks its resolver as the route stage does (TIPLINE_RESOLVER) unless told."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline import bootstrap
from pipeline.route.cli import app

HOST = "cdn1.gb-host.example"  # in the demo host table (GB); .example never resolves through DNS


def _locate(monkeypatch: pytest.MonkeyPatch, resolver: str | None, *flags: str) -> str:
    if resolver is None:
        monkeypatch.delenv("TIPLINE_RESOLVER", raising=False)
    else:
        monkeypatch.setenv("TIPLINE_RESOLVER", resolver)
    bootstrap.settings.cache_clear()  # read once per process: read again with this environment
    try:
        result = CliRunner().invoke(app, ["locate", *flags, HOST])
    finally:
        bootstrap.settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.output


def test_locate_follows_tipline_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    assert f"{HOST}: GB" in _locate(monkeypatch, "demo")


def test_locate_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert f"{HOST}: GB" in _locate(monkeypatch, "dns", "--demo")
    assert f"{HOST}: GB" not in _locate(monkeypatch, "demo", "--dns")


def test_locate_takes_a_url_and_locates_its_host() -> None:
    result = CliRunner().invoke(app, ["locate", "--demo", f"https://{HOST.upper()}/a/b.jpg#frag"])
    assert result.exit_code == 0, result.output
    assert f"https://{HOST.upper()}/a/b.jpg#frag (host {HOST}): GB" in result.output


def test_locate_refuses_a_url_without_a_host_in_one_sentence_and_goes_on() -> None:
    result = CliRunner().invoke(app, ["locate", "--demo", "http:///x", HOST])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "http:///x: not a URL this tipline takes (url: the URL has no host)."
    assert lines[1].startswith(f"{HOST}: GB")
    assert "Traceback" not in result.output
