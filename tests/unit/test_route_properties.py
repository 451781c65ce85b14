"""Properties of the route rules over any valid assessment: no crash, no silent drop, counts that add up."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import events as ev
from pipeline.route import logic
from pipeline.route.resolve import locate_all
from pipeline.route.tables import load_tables
from tests.unit.route_builders import NOW
from tests.unit.strategies import st_event, st_location, st_report_body

TABLES = load_tables()
ADDRESSES = (
    (),  # does not resolve
    ("10.0.0.7",),  # private: no country
    ("212.58.244.22",),  # GB
    ("193.0.6.139",),  # NL
    ("142.150.190.39",),  # CA
    ("2001:410::1",),  # CA, IPv6
    ("77.88.55.88",),  # RU, no hotline
    ("164.100.1.1",),  # IN, no hotline
    ("2001:638::1",),  # DE, IPv6
)


class HashResolver:
    """Spreads any host over the addresses above, the same way every time (never the network)."""

    def addresses(self, host: str) -> tuple[str, ...]:
        return ADDRESSES[hashlib.sha256(host.encode()).digest()[0] % len(ADDRESSES)]

    def addresses_many(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        return {host: self.addresses(host) for host in hosts}


odd_location = st_location() | st.builds(
    ev.Location,
    province=st.sampled_from(("ZZ", "on", "Q", "")),
    country=st.none() | st.sampled_from(("CA", "ca", "XYZ", "NL", "IN")),
)
assessments = st_event(
    ev.ReportAssessed,
    body=st_report_body(
        suspect=st.none() | st.builds(ev.Suspect, location=st.none() | odd_location),
        victim=st.none() | st.builds(ev.Victim, location=st.none() | odd_location),
    ),
)


def _route(event: ev.ReportAssessed) -> list[logic.RouteEvent]:
    return logic.decide(event, TABLES, locate_all(logic.targets(event), HashResolver()), NOW)


def _report_urls(event: ev.ReportAssessed) -> set[str]:
    urls = {u.normalized for i in event.body.incidents for u in i.urls}
    return urls | {f.seen_at_url for i in event.body.incidents for f in i.files if f.seen_at_url}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assessments)
def test_any_assessment_ends_in_one_close_and_loses_no_url(event: ev.ReportAssessed) -> None:
    """Any assessment yields unique recipients, one close last, counts that add up, and every URL referred."""
    events = _route(event)
    assert events == _route(event)
    assert isinstance(events[-1], ev.ReportClosed)
    assert sum(isinstance(e, ev.ReportClosed) for e in events) == 1
    keys = [logic.emit_key(e) for e in events]
    assert len(keys) == len(set(keys))
    referred = [e for e in events if isinstance(e, ev.ReportReferred)]
    close = events[-1]
    if event.determination is ev.Determination.POTENTIALLY_ILLEGAL:
        assert referred
        assert close.outcome is ev.Outcome.REFERRED
        assert _report_urls(event) <= {u for r in referred for u in r.urls}
        assert close.referrals == len(referred)
        cp = sum(r.recipient.kind is ev.RecipientKind.CHILD_PROTECTION for r in referred)
        assert close.domestic_police + close.foreign_police + cp == len(referred)
        assert close.child_protection == (cp == 1)
        for r in referred:
            foreign = r.recipient.kind in (ev.RecipientKind.INHOPE_HOTLINE, ev.RecipientKind.INTERPOL)
            assert r.recipient.domestic is not foreign
            assert r.reasons
        assert not any(isinstance(e, ev.FollowUpRequested) for e in events)
    else:
        assert not referred
        assert close.outcome.value == event.determination.value
        follow_ups = [e for e in events if isinstance(e, ev.FollowUpRequested)]
        owed = event.body.contact is not None and not event.body.anonymous
        assert len(follow_ups) == (1 if owed else 0)
        assert all(f.message_template.endswith(f".{event.body.language.value}") for f in follow_ups)
