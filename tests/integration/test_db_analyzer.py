"""``YoungTableAnalyzer`` against the real PostgreSQL: it analyzes a young table as it doubles, then stops."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.db import YoungTableAnalyzer, connect
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(settings: Settings) -> Iterator[Any]:
    with connect(settings, autocommit=True) as c:
        c.execute("CREATE TABLE young (id bigint PRIMARY KEY)")
        yield c
        c.execute("DROP TABLE IF EXISTS young")


def add(conn: Any, analyzer: YoungTableAnalyzer, start: int, n: int) -> bool:
    with conn.transaction():
        conn.execute(
            "INSERT INTO young SELECT generate_series(%s::bigint, %s::bigint)", (start, start + n - 1)
        )
        return analyzer.grew(conn, n)


def planned_rows(conn: Any) -> float:
    return float(conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'young'::regclass").fetchone()[0])


def test_it_analyzes_each_time_the_table_doubles(conn: Any) -> None:
    analyzer = YoungTableAnalyzer(("young",), floor=100)
    assert planned_rows(conn) < 0  # never analyzed: the planner guesses from the table's pages
    ran = [add(conn, analyzer, i * 60, 60) for i in range(8)]  # 60 rows at a time, 480 in all
    # 120 rows >= floor 100: analyzed; then at 240 (doubled), then 480.
    assert ran == [False, True, False, True, False, False, False, True]
    assert planned_rows(conn) == 480


def test_a_table_already_large_is_left_to_autovacuum(conn: Any) -> None:
    conn.execute("INSERT INTO young SELECT generate_series(1, 5000)")
    conn.execute("ANALYZE young")
    analyzer = YoungTableAnalyzer(("young",), floor=100)
    assert not any(add(conn, analyzer, 10_000 + i * 500, 500) for i in range(9))  # 4,500 < 5,000
    assert add(conn, analyzer, 20_000, 500)


def test_only_plain_table_names_are_taken() -> None:
    with pytest.raises(ValueError, match="plain"):
        YoungTableAnalyzer(("young; DROP TABLE x",))
