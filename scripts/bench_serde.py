"""Benchmark: decode + encode round trips per second of a typical ReportClassified, on one core.

Run: ``.venv/bin/python scripts/bench_serde.py``. Prints figures; asserts nothing (not a timed test).

The last line is fastavro's own read+write of the same record, without any dataclass conversion: the
ceiling for serde as long as fastavro writes the body. On the 2-core AMD EPYC VM this was written on
(Dec 2026, under load from parallel test runs) it printed about 3,000-5,000 /s, and serde's
decode+encode about 2,600-3,800 /s: the conversion costs roughly a fifth, fastavro the rest.
Since serde writes a decoded body that is handed on unchanged from the bytes it was read from
(``serde._BodyBytes``: what a stage does), decode+encode printed 5,200 /s beside 3,800 /s before, in
the same session; a fresh encode (a body no decode has seen) costs what it did.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import UTC, datetime

import fastavro

from pipeline import events as ev
from pipeline import serde


def typical_report_classified() -> ev.ReportClassified:
    """A web report with two incidents (a web page with 5 URLs and 2 files, an e-mail) and a suspect."""
    now = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    actor = ev.Actor(kind=ev.ActorKind.SYSTEM, id="classify")
    first = ev.Envelope.first(
        submission_id="0b8f0d1e-7e53-4c5b-9d55-6a3f1d1f2a10",
        event_type="ReportSubmitted",
        report_id="CT-2026-004211",
        producer="intake/0.1.0",
        actor=ev.Actor(kind=ev.ActorKind.REPORTER, id="web"),
        occurred_at=now,
    )
    envelope = ev.Envelope.follow(
        first, event_type="ReportClassified", producer="classify/0.1.0", actor=actor, occurred_at=now
    )
    urls = tuple(
        ev.UrlRef(
            original=f"HTTPS://Files.Example-Host.nl/gallery/{i}/index.html?ref=abc{i}",
            normalized=f"https://files.example-host.nl/gallery/{i}/index.html?ref=abc{i}",
            host="files.example-host.nl",
        )
        for i in range(5)
    )
    files = tuple(
        ev.FileRef(
            file_name=f"img_{i:04d}.jpg",
            hashes=(
                ev.FileHash(hash_type=ev.HashType.MD5, value="9e107d9d372bb6826bd81d3542a419d6"),
                ev.FileHash(hash_type=ev.HashType.PDQ, value="f" * 64),
            ),
            seen_at_url=urls[i].normalized,
        )
        for i in range(2)
    )
    body = ev.ReportBody(
        report_number="CT-2026-004211",
        channel=ev.Channel.WEB,
        language=ev.Language.EN,
        received_at=now,
        reporter_category=ev.Category.CSAM,
        description="I found a gallery of images of what look like young children on this site. " * 8,
        incidents=(
            ev.Incident(
                incident_id="CT-2026-004211/1", technology=ev.Technology.WEB_PAGE, urls=urls, files=files
            ),
            ev.Incident(
                incident_id="CT-2026-004211/2", technology=ev.Technology.EMAIL, emails=("seller@example.com",)
            ),
        ),
        suspect=ev.Suspect(
            usernames=("darkuser77",),
            emails=("seller@example.com",),
            ip_events=(ev.IpEvent(ip="203.0.113.9", event="upload", at=now),),
            location=ev.Location(country="NL"),
        ),
        victim=None,
        annotations=(ev.Annotation.SELF_PRODUCTION,),
        facts=ev.Facts(
            content=(ev.ContentKind.SEXUAL_IMAGE_OR_VIDEO,),
            actions=(ev.MaterialAction.SHARED,),
            sender_role=ev.Role.ADULT,
            recipient_role=ev.Role.UNKNOWN,
        ),
        anonymous=True,
        contact=None,
        reporters_count=1,
    )
    return ev.ReportClassified(
        envelope=envelope,
        level=2,
        priority_reasons=("csam_content",),
        arrival_seq=1772600767890,
        incidents=(
            ev.IncidentClassification(
                incident_id="CT-2026-004211/1",
                reporter_category=ev.Category.CSAM,
                assigned_category=ev.Category.CSAM,
                sections=("163.1(3)",),
                verdict=ev.Verdict.CONFIRMED,
                reasons=("content_sexual_image_of_minor", "shared"),
            ),
            ev.IncidentClassification(
                incident_id="CT-2026-004211/2",
                reporter_category=ev.Category.CSAM,
                assigned_category=None,
                verdict=ev.Verdict.UNCLASSIFIABLE,
                reasons=("no_content_described",),
            ),
        ),
        needs_analyst_review=True,
        body=body,
    )


def _rate(fn: Callable[[], object], seconds: float = 2.0) -> float:
    n = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(200):
            fn()
        n += 200
    return n / (time.perf_counter() - started)


def main() -> None:
    event = typical_report_classified()
    data = serde.encode(event)
    assert serde.decode(data) == event  # noqa: S101 - a benchmark of a broken codec is worthless
    print(f"typical ReportClassified: {len(data)} bytes on the wire")
    for label, fn in (
        ("encode", lambda: serde.encode(event)),
        ("decode", lambda: serde.decode(data)),
        ("decode+encode", lambda: serde.encode(serde.decode(data))),
    ):
        print(f"  {label:<36} {_rate(fn):>9,.0f} /s")
    # The floor set by fastavro itself: the same record as a dict, no dataclass conversion at all.
    parsed = serde._table().by_type[type(event)].parsed
    record = serde.to_avro_dict(event)

    def fastavro_round_trip() -> None:
        buf = io.BytesIO(data)
        buf.seek(serde.HEADER_LEN)
        fastavro.schemaless_reader(buf, parsed, None)
        # The record serde hands fastavro (unions in tuple notation), not the dict fastavro returns, whose
        # unions the writer would have to guess by validating every branch.
        fastavro.schemaless_writer(io.BytesIO(), parsed, record)

    print(f"  {'fastavro alone, read+write (floor)':<36} {_rate(fastavro_round_trip):>9,.0f} /s")


if __name__ == "__main__":
    main()
