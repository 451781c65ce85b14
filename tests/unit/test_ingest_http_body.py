"""The web endpoint's body reading, on its own: a body that never finishes arriving gets a 408."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.ingest import http


def _scope(length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": http.REPORTS_PATH,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(length).encode())],
    }


def test_a_body_shorter_than_its_content_length_gets_a_408_not_a_request_open_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http, "BODY_TIMEOUT_S", 0.2)
    sent = [{"type": "http.request", "body": b'{"description":', "more_body": True}]

    async def receive() -> dict[str, Any]:
        if sent:
            return sent.pop()
        await asyncio.sleep(3600)  # the rest never comes
        raise AssertionError

    async def run() -> http._Answer:
        return await asyncio.wait_for(http._answer_report(None, _scope(1000), receive), 10)  # type: ignore[arg-type]

    answer = asyncio.run(run())
    assert answer.status == 408
    assert answer.payload["field"] == "(body)"
    assert answer.payload["reason"] == "timeout"


def test_a_body_that_arrives_in_time_is_read_whole() -> None:
    chunks = [
        {"type": "http.request", "body": b"}", "more_body": False},
        {"type": "http.request", "body": b'{"a": 1', "more_body": True},
    ]

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return chunks.pop()

    assert asyncio.run(http._read_body(receive, "8")) == b'{"a": 1}'


def test_a_server_shutdown_cancelling_the_read_is_not_taken_for_a_timeout() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError

    async def run() -> None:
        task = asyncio.ensure_future(http._read_body(receive, None))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
