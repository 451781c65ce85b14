"""The report generator: reproducible, accepted by intake, and shaped like the tipline's published figures."""

from __future__ import annotations

import csv
import re
import statistics
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from iptocc import country_code

from pipeline import events as ev
from pipeline import generator as gen
from pipeline import serde
from pipeline.ingest import logic

N = 5_000
SEED = 2026
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DOMAIN = Path(gen.__file__).parent / "generator_data"


N_EVENTS = 1_500  # intake's parser takes a few ms a report: a third of the stream keeps the suite fast


@pytest.fixture(scope="module")
def subs() -> list[gen.Submission]:
    return list(gen.generate_submissions(N, SEED, start=START))


@pytest.fixture(scope="module")
def events() -> list[ev.ReportSubmitted]:
    return list(gen.generate_events(N_EVENTS, SEED, start=START, encrypt=_fake_encrypt))


def _share(items: list[Any], pred: Any) -> float:
    return sum(1 for x in items if pred(x)) / len(items)


def _weights(rows: tuple[tuple[Any, float], ...]) -> dict[Any, float]:
    total = sum(w for _, w in rows)
    return {k: w / total for k, w in rows}


def _fake_encrypt(report_id: str, contact: Mapping[str, str]) -> ev.EncryptedContact:
    # Real AES-GCM with a fixed test key: the demo binds pipeline.ingest.crypto.encrypt_contact instead.
    nonce = bytes(12)
    data = repr(sorted(contact.items())).encode()
    return ev.EncryptedContact(
        key_id=report_id, nonce=nonce, ciphertext=AESGCM(bytes(32)).encrypt(nonce, data, report_id.encode())
    )


# --- Reproducibility --------------------------------------------------------------------------------


def test_same_seed_gives_the_same_stream() -> None:
    """Two runs with one seed and start yield identical reports, channels and times."""
    a = list(gen.generate_submissions(300, 7, start=START))
    b = list(gen.generate_submissions(300, 7, start=START))
    assert a == b


def test_different_seeds_give_different_streams() -> None:
    """Another seed yields other reports."""
    a = list(gen.generate(200, 7, start=START))
    b = list(gen.generate(200, 8, start=START))
    assert [r["submission_id"] for r in a] != [r["submission_id"] for r in b]
    assert sum(x == y for x, y in zip(a, b, strict=True)) == 0


def test_a_shorter_run_is_a_prefix_of_a_longer_one() -> None:
    """The first k reports do not depend on how many are asked for."""
    assert list(gen.generate(40, 3, start=START)) == list(gen.generate(400, 3, start=START))[:40]


def test_without_start_times_begin_at_the_fixed_default() -> None:
    """No clock is read: without a start the stream begins at DEFAULT_START, run after run."""
    first = next(gen.generate_submissions(1, 5))
    assert gen.DEFAULT_START < first.submitted_at < gen.DEFAULT_START + timedelta(days=1)
    assert first == next(gen.generate_submissions(1, 5))


@pytest.mark.parametrize(("n", "per_day"), [(-1, 10.0), (5, 0.0)])
def test_bad_arguments_are_refused(n: int, per_day: float) -> None:
    """A negative count or a rate that is not positive is one clear ValueError."""
    with pytest.raises(ValueError, match="must be"):
        list(gen.generate(n, 1, reports_per_day=per_day))


# --- Accepted by intake -----------------------------------------------------------------------------


def test_every_report_is_accepted_by_intake_and_survives_the_wire(
    subs: list[gen.Submission], events: list[ev.ReportSubmitted]
) -> None:
    """Each dict passes intake's parser, becomes a ReportSubmitted, normalises, and round-trips through serde."""
    assert len(events) == N_EVENTS
    for sub, event in zip(subs[:N_EVENTS], events, strict=True):
        assert event.submission_id == sub.report["submission_id"]
        assert event.submitted_at == sub.submitted_at
        assert event.channel is sub.channel
        assert (event.contact is None) == sub.report["anonymous"]
        content = logic.normalized_content(event)
        assert {i.technology for i in content.incidents} == sub.truth.technologies
        assert serde.decode(serde.encode(event)) == event


def test_reports_carry_only_intake_fields_and_no_outcome(subs: list[gen.Submission]) -> None:
    """A report holds exactly the fields intake knows: no outcome, no true category, no drawn origin."""
    for sub in subs[:500]:
        assert set(sub.report) <= logic.KNOWN_FIELDS
    assert not {"outcome", "determination", "true_category", "origin", "province"} & logic.KNOWN_FIELDS


def test_every_category_has_facts() -> None:
    """Each category the generator can draw has its own facts."""
    assert set(gen._FACTS) == set(ev.Category)
    assert set(gen._TECH_PROFILES) == set(ev.Category)
    assert set(gen._PERSON_SHARE) == set(ev.Category)
    assert set(gen._DESCRIPTIONS) == set(ev.Category)


# --- Shaped like the published figures ---------------------------------------------------------------


def test_true_category_mix_follows_the_2022_counts(subs: list[gen.Submission]) -> None:
    """The true categories follow 2022's mix: CSAM ~75%, online harms ~11%, luring ~11%, trafficking ~1.4%."""
    want = _weights(gen.default_tables().categories)
    got = Counter(s.truth.category for s in subs)
    assert got[ev.Category.CSAM] / N == pytest.approx(0.755, abs=0.02)
    for cat in (ev.Category.ONLINE_HARMS, ev.Category.LURING):
        assert got[cat] / N == pytest.approx(want[cat], abs=0.015)
    assert got[ev.Category.TRAFFICKING] / N == pytest.approx(0.014, abs=0.006)
    assert got[ev.Category.NCII_MINOR] / N == pytest.approx(0.009, abs=0.005)
    assert got[ev.Category.TRAVELLING] + got[ev.Category.COMMERCIAL_EXPLOITATION] < 0.01 * N


def test_reporters_sometimes_are_not_sure_or_choose_wrong(subs: list[gen.Submission]) -> None:
    """About 5% choose no category and about 5% a wrong one, yet their mix stays close to the true one."""
    chosen = [s.report["category"] for s in subs]
    not_sure = _share(chosen, lambda c: c is None)
    wrong = sum(1 for s in subs if s.report["category"] not in (None, s.truth.category)) / N
    assert 0.03 < not_sure < 0.10
    assert 0.03 < wrong < 0.10
    assert _share(chosen, lambda c: c == "csam") == pytest.approx(0.75, abs=0.04)
    ncii = [s for s in subs if s.truth.category is ev.Category.NCII_MINOR]
    assert any(s.report["category"] == "csam" for s in ncii)


def test_material_reports_hold_about_4_9_urls(subs: list[gen.Submission]) -> None:
    """Every CSAM report has a URL; they hold about 4.9 on average (70,186 URLs in 14,260 reports)."""
    counts = [len(s.report["urls"]) for s in subs if s.truth.category is ev.Category.CSAM]
    assert min(counts) >= 1
    assert statistics.mean(counts) == pytest.approx(4.9, abs=0.5)
    assert max(counts) > 15  # a long tail, not a constant


def test_about_one_and_a_half_incidents_per_report(
    subs: list[gen.Submission], events: list[ev.ReportSubmitted]
) -> None:
    """Ingest splits the reports into about 1.5 incidents each (1.53 historically)."""
    counts = [len(logic.normalized_content(e).incidents) for e in events]
    assert statistics.mean(counts) == pytest.approx(1.53, abs=0.1)
    # technologies() counts as ingest does (checked report by report above), so the whole stream agrees too.
    assert statistics.mean(len(s.truth.technologies) for s in subs) == pytest.approx(1.53, abs=0.08)


def test_victim_or_suspect_details_on_about_one_report_in_ten(subs: list[gen.Submission]) -> None:
    """About 6 a day of ~52 name a victim or suspect; luring reports far more often than CSAM ones."""
    assert _share(subs, lambda s: s.report["victim"] or s.report["suspect"]) == pytest.approx(0.10, abs=0.025)

    def rate(cat: ev.Category) -> float:
        group = [s for s in subs if s.truth.category is cat]
        return _share(group, lambda s: s.report["victim"] or s.report["suspect"])

    assert rate(ev.Category.LURING) > 5 * rate(ev.Category.CSAM)


def test_reporters_origins_follow_2022(subs: list[gen.Submission]) -> None:
    """Origins follow 2022's counts: ON ~27%, international ~29%, unknown ~11%, QC ~5%."""
    got = Counter(s.truth.origin for s in subs)
    for origin, expected in (
        ("ON", 5163),
        ("international", 5518),
        ("unknown", 2007),
        ("BC", 1610),
        ("QC", 923),
    ):
        assert got[origin] / N == pytest.approx(expected / 18_891, abs=0.02), origin
    assert set(got) <= set(gen.DOMESTIC) | {"international", "unknown"}


def test_reporters_say_where_they_are(subs: list[gen.Submission]) -> None:
    """A Canadian reporter gives their province, one abroad a country other than CA, unknown nothing."""
    for sub in subs:
        where = sub.report.get("reporter_location")
        if sub.truth.origin in gen.DOMESTIC:
            assert where == {"province": sub.truth.origin, "country": "CA"}
        elif sub.truth.origin == "international":
            assert where is not None
            assert set(where) == {"country"}
            assert re.fullmatch(r"[A-Z]{2}", where["country"])
            assert where["country"] != "CA"
        else:
            assert sub.truth.origin == "unknown"
            assert "reporter_location" not in sub.report


def test_reporter_location_reaches_the_submitted_event() -> None:
    """The generated reporter location survives intake's rules into ReportSubmitted."""
    events = list(gen.generate_events(300, seed=11))
    subs = list(gen.generate_submissions(300, seed=11))
    assert sum(1 for e in events if e.reporter_location is not None) > 200
    for sub, event in zip(subs, events, strict=True):
        where = sub.report.get("reporter_location")
        expected = None if where is None else ev.Location(**where)
        assert event.reporter_location == expected


def test_a_located_victim_is_mostly_in_the_reporters_province(subs: list[gen.Submission]) -> None:
    """A victim's province, when given, is usually the reporter's (what routing sees of the origin)."""
    located = [
        s for s in subs if s.report["victim"] and (s.report["victim"]["location"] or {}).get("province")
    ]
    assert located
    assert _share(located, lambda s: s.report["victim"]["location"]["province"] == s.truth.origin) > 0.6


def test_hosting_countries_follow_inhope_2023(subs: list[gen.Submission]) -> None:
    """URLs are hosted ~35% in GB, ~20% in NL, ~6% in DE, the rest spread, some without a hotline."""
    countries = [c for s in subs for c in s.truth.url_countries]
    got = Counter(countries)
    assert got["GB"] / len(countries) == pytest.approx(0.350, abs=0.04)
    assert got["NL"] / len(countries) == pytest.approx(0.198, abs=0.04)
    assert got["DE"] / len(countries) == pytest.approx(0.059, abs=0.02)
    assert {"CA", "US", "FR", "RU", "CN"} <= set(got)
    assert len(got) >= 20


def test_url_hosts_resolve_to_their_country(subs: list[gen.Submission]) -> None:
    """Each URL's host is a demo host (or its address) whose IP iptocc places in the URL's country."""
    t = gen.default_tables()
    ip_of = {host: ip for hosts in t.hosts.values() for host, ip in hosts}
    for s in subs[:1000]:
        for url, country in zip(s.report["urls"], s.truth.url_countries, strict=True):
            host = logic.normalize_url(url).host
            assert country_code(ip_of.get(host, host)) == country, url


def test_every_demo_host_address_is_in_its_country() -> None:
    """The generator's own host table: iptocc puts every address in the country the row names."""
    with (DOMAIN / "hosts.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert len(rows) > 50
    wrong = [(r["host"], r["ip"], r["country"]) for r in rows if country_code(r["ip"]) != r["country"]]
    assert wrong == []
    assert all(r["host"].endswith(".example") for r in rows)


def test_hosting_shares_table_sums_to_one() -> None:
    """The hosting shares cover the whole (GB, NL and DE as INHOPE published, the rest estimated)."""
    shares = dict(gen.default_tables().hosting)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    assert (shares["GB"], shares["NL"], shares["DE"]) == (0.3503, 0.1979, 0.0588)


def test_some_urls_are_reported_by_many_people(subs: list[gen.Submission]) -> None:
    """About 10% of URL mentions come from a small pool of viral URLs, some reported dozens of times."""
    urls = Counter(u for s in subs for u in s.report["urls"])
    mentions = sum(urls.values())
    repeated = sum(c for c in urls.values() if c > 1)
    assert 0.07 < repeated / mentions < 0.15
    assert urls.most_common(1)[0][1] > 50


# --- Content consistent with the true category ---------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "content", "sender", "recipient"),
    [
        (ev.Category.CSAM, "sexual_image_or_video", "unknown", "unknown"),
        (ev.Category.LURING, "sexual_conversation", "adult", "minor"),
        (ev.Category.TRAFFICKING, "offer_of_sexual_services", "adult", "minor"),
        (ev.Category.NCII_MINOR, "intimate_image", None, "minor"),
        (ev.Category.TRAVELLING, "travel_plan", "adult", None),
        (ev.Category.ONLINE_HARMS, None, None, "minor"),
    ],
)
def test_facts_follow_the_true_category(
    subs: list[gen.Submission], category: ev.Category, content: str | None, sender: str | None, recipient: str
) -> None:
    """Facts describe what the true category implies, whatever the reporter chose."""
    group = [s.report["facts"] for s in subs if s.truth.category is category]
    assert group
    for facts in group:
        if content is not None:
            assert content in facts["content"]
        if sender is not None:
            assert facts["sender_role"] == sender
        assert recipient is None or facts["recipient_role"] == recipient
    if category in (ev.Category.TRAFFICKING, ev.Category.TRAVELLING):
        key = "money_involved" if category is ev.Category.TRAFFICKING else "travel"
        assert all(f[key] for f in group)


def test_sextortion_is_a_large_share_of_luring(subs: list[gen.Submission]) -> None:
    """About 40% of luring reports are sextortion: tagged, with threats and an intimate image."""
    luring = [s.report for s in subs if s.truth.category is ev.Category.LURING]
    sextortion = [r for r in luring if "sextortion" in r["annotations"]]
    assert len(sextortion) / len(luring) == pytest.approx(gen.SEXTORTION_SHARE_OF_LURING, abs=0.07)
    assert all(r["facts"]["threats"] and "intimate_image" in r["facts"]["content"] for r in sextortion)
    notes = Counter(a for s in subs for a in s.report["annotations"])
    assert {"live_streaming", "self_production", "solicitation", "minor_to_minor"} <= set(notes)


def test_file_hashes_are_random_hex_of_the_right_length(subs: list[gen.Submission]) -> None:
    """Some reports describe files by md5/sha1/pdq hashes of the right lengths, all distinct (never real ones)."""
    lengths = {"md5": 32, "sha1": 40, "pdq": 64}
    hashes = [h for s in subs for f in s.report["files"] for h in f["hashes"]]
    assert 0.05 < _share(subs, lambda s: s.report["files"]) < 0.2
    assert {h["hash_type"] for h in hashes} == set(lengths)
    assert all(re.fullmatch(rf"[0-9a-f]{{{lengths[h['hash_type']]}}}", h["value"]) for h in hashes)
    assert len({h["value"] for h in hashes}) == len(hashes)


# --- Reporters -------------------------------------------------------------------------------------------


def test_languages_follow_the_reporters_origin(subs: list[gen.Submission]) -> None:
    """Most Quebec reporters write in French; overall French is a minority."""
    qc = [s for s in subs if s.truth.origin == "QC"]
    assert _share(qc, lambda s: s.report["language"] == "fr") > 0.7
    assert 0.04 < _share(subs, lambda s: s.report["language"] == "fr") < 0.15


def test_about_60_percent_are_anonymous_and_contacts_are_fake(subs: list[gen.Submission]) -> None:
    """~60% are anonymous (no contact); contacts use example.org e-mails and 555-01xx phone numbers."""
    assert _share(subs, lambda s: s.report["anonymous"]) == pytest.approx(0.6, abs=0.04)
    for s in subs:
        contact = s.report["contact"]
        assert (contact is None) == s.report["anonymous"]
        if contact is not None:
            assert contact["email"].endswith("@example.org")
            assert contact["phone"] is None or re.fullmatch(r"\+1\d{3}55501\d\d", contact["phone"])
    phones = [p for s in subs for p in s.report["phones_reported"]]
    assert phones
    assert all(re.fullmatch(r"\+1\d{3}55501\d\d", p) for p in phones)
    emails = [e for s in subs for e in s.report["emails_reported"]]
    assert all(e.rsplit("@", 1)[1] in {"example.org", "example.com", "example.net"} for e in emails)


def test_times_rise_at_about_52_reports_a_day(subs: list[gen.Submission]) -> None:
    """Submissions arrive in order at ~52 a day (18,891 in 2022); an incident happens before its report."""
    times = [s.submitted_at for s in subs]
    assert times == sorted(times)
    assert times[0] > START
    days = (times[-1] - START).total_seconds() / 86_400
    assert N / days == pytest.approx(18_891 / 365, rel=0.08)
    with_time = [s for s in subs if s.report["incident_time"]]
    assert 0.6 < len(with_time) / N < 0.9
    for s in with_time:
        assert datetime.fromisoformat(s.report["incident_time"]) < s.submitted_at


def test_evenings_in_canada_are_busier_than_mornings(subs: list[gen.Submission]) -> None:
    """Arrivals swing over the day: more around 21:00 Toronto time (02:00 UTC) than around 09:00 (14:00 UTC)."""
    hours = Counter(s.submitted_at.hour for s in subs)
    evening = sum(hours[h] for h in (0, 1, 2, 3, 4))
    morning = sum(hours[h] for h in (12, 13, 14, 15, 16))
    assert evening > 1.8 * morning


def test_without_an_encrypter_contacts_are_sealed_under_a_throwaway_key(subs: list[gen.Submission]) -> None:
    """Events made without ``encrypt`` still carry each contact, encrypted, never the clear details."""
    events = list(gen.generate_events(60, SEED, start=START))
    for sub, event in zip(subs[:60], events, strict=True):
        if sub.report["contact"] is None:
            assert event.contact is None
            continue
        assert event.contact is not None
        assert event.contact.key_id == event.envelope.report_id
        assert sub.report["contact"]["email"].encode() not in event.contact.ciphertext
        assert len(event.contact.ciphertext) > len(sub.report["contact"]["email"])
    assert any(e.contact is not None for e in events)


def test_summary_figures_match_the_stream(subs: list[gen.Submission]) -> None:
    """summarize() reports the stream's figures: shares add up and match the published targets."""
    figures = gen.summarize(subs)
    assert figures["reports"] == N
    assert sum(v for k, v in figures.items() if k.startswith("category_")) == pytest.approx(1.0)
    assert figures["urls_per_csam_report"] == pytest.approx(4.9, abs=0.5)
    assert figures["share_anonymous"] == pytest.approx(0.6, abs=0.04)
    assert gen.summarize([]) == {"reports": 0.0}


@pytest.mark.parametrize("n", [10, 3000, 20000])
def test_a_recent_window_stream_ends_before_today_within_200_days(n: int) -> None:
    """The intake refuses future times and checks ages at intake: a demo's stream must be recent and past."""
    from datetime import UTC, datetime, timedelta

    from pipeline.generator import generate_submissions, recent_window

    today = datetime(2026, 12, 3, 20, 0, tzinfo=UTC)
    start, per_day = recent_window(today, n)
    times = [s.submitted_at for s in generate_submissions(n, 7, start=start, reports_per_day=per_day)]
    assert len(times) == n
    assert max(times) < today
    assert today - min(times) < timedelta(days=200)
