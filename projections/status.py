"""Where the live projector stands: stored next offset per partition against the end of the log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from psycopg import sql

from pipeline import db, kafka
from pipeline.settings import Settings
from projections import model, pg
from projections.runner import end_offsets, event_topics, partitions_of, stored_offsets


@dataclass(frozen=True, kw_only=True)
class PartitionStatus:
    topic: str
    partition: int
    next_offset: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.next_offset)


def status(settings: Settings) -> tuple[list[PartitionStatus], dict[str, int]]:
    schema = pg.schema_for(settings)
    with db.connect(settings, autocommit=True) as conn:
        pg.install(conn, schema)
        stored = stored_offsets(conn, schema)
        per_step = {
            model.STEPS[s]: int(n)
            for s, n in conn.execute(
                sql.SQL("SELECT step, count(*) FROM {}.proj_report GROUP BY 1 ORDER BY 1").format(
                    sql.Identifier(schema)
                )
            )
        }
    cons = kafka.consumer(settings, f"tipline.projections.status.{uuid.uuid4().hex}")
    try:
        parts = partitions_of(cons, event_topics(settings))
    finally:
        cons.close()
    ends = end_offsets(settings, parts)
    rows = [
        PartitionStatus(topic=t, partition=p, next_offset=stored.get((t, p), 0), end=ends[(t, p)])
        for t, p in parts
    ]
    return rows, per_step
