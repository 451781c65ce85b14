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
