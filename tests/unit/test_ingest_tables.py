"""The in-memory view of the ingest tables that a run of submissions is received against: the rules of
``ingest_receive`` (numbering, linking to the earliest open report of a key, reporters counted)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.ingest.tables import Head, Report, RunView

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _view(reports: list[Report] | None = None, heads: list[Head] | None = None) -> RunView:
    return RunView.of(reports or [], heads or [], {})


def _head(key: str, first: str, seq: int, reports: int, *, is_open: bool = True, found: bool = True) -> Head:
    """A head as read from the database."""
    return Head(key, first, (0, seq), reports, first_open=is_open, first_found=found, read_reports=reports)


def test_a_report_without_keys_links_to_nothing() -> None:
    """No link keys: no link, one reporter, a new row."""
    view = _view()
    row, same = view.receive("r1", "s1", b"d1", T0, [])
    assert (row.linked_to, row.reporters_count, same) == (None, 1, True)
    assert view.new_reports == [row]
    assert view.changed_heads == {}


def test_reports_of_one_run_link_to_the_first_and_count_reporters() -> None:
    """Within a run, a report naming a key met earlier in the run links to its first report; the count
    is how many reports named the key so far."""
    view = _view()
    a, _ = view.receive("a", "sa", b"da", T0, ["url:x"])
    b, _ = view.receive("b", "sb", b"db", T0, ["url:x", "url:x"])
    c, _ = view.receive("c", "sc", b"dc", T0, ["url:y", "url:x"])
    assert (a.linked_to, a.reporters_count) == (None, 1)
    assert (b.linked_to, b.reporters_count) == ("a", 2)
    assert (c.linked_to, c.reporters_count) == ("a", 3)
    assert [(k, r.report_id) for k, r in view.new_keys] == [
        ("url:x", "a"),
        ("url:x", "b"),
        ("url:y", "c"),
        ("url:x", "c"),
    ]
    assert {k: (h.reports, h.read_reports) for k, h in view.changed_heads.items()} == {
        "url:x": (3, None),
        "url:y": (1, None),
    }


@pytest.mark.parametrize(
    ("heads", "expected"),
    [
        # the earliest numbered first report wins, whatever the key order
        ([_head("url:x", "old2", 20, 4), _head("url:y", "old1", 10, 1)], ("old1", 5)),
        # a closed first report is skipped; the count still takes every key
        ([_head("url:x", "old2", 20, 1), _head("url:y", "old1", 10, 7, is_open=False)], ("old2", 8)),
        # every first report closed: no link, one reporter
        (
            [_head("url:x", "old2", 20, 1, is_open=False), _head("url:y", "old1", 10, 1, is_open=False)],
            (None, 1),
        ),
    ],
)
def test_the_link_is_the_earliest_open_first_report(
    heads: list[Head], expected: tuple[str | None, int]
) -> None:
    """The link is the open first report with the lowest number among the keys' heads; the count is the
    largest count among the keys, this report included."""
    read = heads[0].reports
    view = _view(heads=[dataclasses.replace(h) for h in heads])
    row, _ = view.receive("new", "s", b"d", T0, ["url:x", "url:y"])
    assert (row.linked_to, row.reporters_count) == expected
    assert (view.changed_heads["url:x"].read_reports, view.changed_heads["url:x"].reports) == (read, read + 1)


def test_a_head_whose_first_report_has_no_row_is_not_counted() -> None:
    """As ingest_receive's join does, a head without its first report's row moves but is not counted."""
    view = _view(heads=[_head("url:x", "ghost", 5, 9, found=False), _head("url:y", "real", 6, 2)])
    row, _ = view.receive("new", "s", b"d", T0, ["url:x", "url:y"])
    assert (row.linked_to, row.reporters_count) == ("real", 3)
    assert view.heads["url:x"].reports == 10


def test_a_numbered_first_report_comes_before_one_of_the_run() -> None:
    """A report already numbered is earlier than any report numbered in this run."""
    view = _view(heads=[_head("url:old", "early", 3, 1)])
    view.receive("run1", "s1", b"d1", T0, ["url:new"])
    row, _ = view.receive("run2", "s2", b"d2", T0, ["url:new", "url:old"])
    assert row.linked_to == "early"


def test_a_report_received_again_reads_its_row_back() -> None:
    """The same report id again: the row it has, same submission when the bytes are equal, a
    resubmission when not; nothing moves."""
    stored = Report("r", "s", b"d", T0, seq=41, linked_to="x", reporters_count=3)
    view = _view(reports=[stored])
    assert view.receive("r", "s", b"d", T0 + timedelta(1), ["url:z"]) == (stored, True)
    assert view.receive("r", "s", b"other", T0, ["url:z"]) == (stored, False)
    assert view.new_reports == []
    assert view.new_keys == []
    assert view.changed_heads == {}


def test_numbers_are_drawn_per_call_as_the_database_does() -> None:
    """Each call draws a number, as ingest_receive's insert does even for a report it finds: a new report
    gets the number of its call, and the others leave gaps."""
    view = _view(reports=[Report("old", "s", b"d", T0, seq=1)])
    view.receive("a", "sa", b"da", T0, [])
    view.receive("old", "s", b"d", T0, [])
    view.receive("b", "sb", b"db", T0, [])
    view.receive("a", "sa", b"da", T0, [])
    with pytest.raises(ValueError, match="4 submissions"):
        view.number([7, 8])
    view.number([13, 11, 12, 10])
    assert [(r.report_id, r.seq) for r in view.new_reports] == [("a", 10), ("b", 12)]


def test_a_rejection_keeps_its_first_time() -> None:
    """A submission rejected again keeps the time it was first rejected at, and is written once."""
    view = RunView.of([], [], {("r", b"d"): T0})
    assert view.rejected_at("r", b"d", T0 + timedelta(1)) == T0
    assert view.rejected_at("r", b"e", T0 + timedelta(2)) == T0 + timedelta(2)
    assert view.rejected_at("r", b"e", T0 + timedelta(3)) == T0 + timedelta(2)
    assert view.new_rejections == [("r", b"e", T0 + timedelta(2))]
