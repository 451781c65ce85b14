"""The local broker's cluster id: as Kafka's own ``Uuid.randomUuid`` makes them, never read as an option."""

from __future__ import annotations

import base64
import re

from pipeline.services.kafka import new_cluster_id


def test_cluster_ids_are_22_url_safe_characters_and_never_start_with_a_dash() -> None:
    # One id in 64 would start with "-" if drawn plainly: 20,000 draws make about 312 such, all refused.
    ids = [new_cluster_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids[:100])
