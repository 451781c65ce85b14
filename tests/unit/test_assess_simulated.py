"""The simulated analyst: reproducible from a seed, labelled, and near the published 45/55 split."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pipeline.assess import simulated
from pipeline.events import ActorKind, Category, Determination, ReportClassified
from tests.unit.test_assess_support import canadian_victim, classified

# A realistic mix of classified categories (Cybertip.ca's published shares), with the share of CSAM
# reports that carry URLs or files; None is an unclassifiable report.
MIX: tuple[tuple[Category | None, float], ...] = (
    (Category.CSAM, 0.75),
    (Category.ONLINE_HARMS, 0.11),
    (Category.LURING, 0.11),
    (Category.TRAFFICKING, 0.014),
    (Category.NCII_MINOR, 0.008),
    (Category.EXPLICIT_MATERIAL_TO_CHILD, 0.004),
    (None, 0.004),
)
CSAM_WITH_URLS = 0.85


def synthetic_mix(n: int, seed: int) -> list[ReportClassified]:
    rng = random.Random(seed)
    cats = [c for c, _ in MIX]
    weights = [w for _, w in MIX]
    out = []
    for i in range(n):
        cat = rng.choices(cats, weights)[0]
        has_urls = cat is not Category.CSAM or rng.random() < CSAM_WITH_URLS
        out.append(
            classified(
                report_id=f"mix-{seed}-{i}",
                category=cat,
                urls=("https://example.test/x",) if has_urls else (),
                victim=canadian_victim() if rng.random() < 0.05 else None,
                event_id=f"00000000-0000-4000-8000-{i:012d}",
            )
        )
    return out


def test_same_seed_same_decisions_different_seed_different() -> None:
    """Decisions are a function of seed and report: the same seed repeats them, another seed differs."""
    reports = synthetic_mix(400, seed=1)
    first = [simulated.decide(r, 7) for r in reports]
    again = [simulated.decide(r, 7) for r in reversed(reports)][::-1]
    other = [simulated.decide(r, 8) for r in reports]
    assert first == again
    assert [d.determination for d in first] != [d.determination for d in other]


@pytest.mark.parametrize("seed", [7, 11, 2026])
def test_realistic_mix_ends_near_45_percent_potentially_illegal(seed: int) -> None:
    """On the published category mix about 45% end potentially illegal and 55% not (within 2.5 points)."""
    reports = synthetic_mix(20_000, seed=seed)
    counts = Counter(simulated.decide(r, seed).determination for r in reports)
    share = counts[Determination.POTENTIALLY_ILLEGAL] / len(reports)
    assert 0.425 <= share <= 0.475, f"potentially illegal share {share:.3f}"
    rest = counts[Determination.NOT_ILLEGAL] + counts[Determination.INFORMATIONAL]
    assert rest / len(reports) >= 0.50  # outside_mandate stays a small remainder


@pytest.mark.parametrize(
    ("category", "urls", "expected_case", "dominant"),
    [
        (Category.CSAM, ("https://example.test/a",), "csam_with_content", Determination.POTENTIALLY_ILLEGAL),
        (Category.CSAM, (), "csam_without_content", Determination.NOT_ILLEGAL),
        (Category.ONLINE_HARMS, ("https://example.test/a",), "online_harms", Determination.INFORMATIONAL),
        (Category.LURING, (), "luring", Determination.POTENTIALLY_ILLEGAL),
        (None, (), "unclassifiable", Determination.INFORMATIONAL),
        (Category.TRAFFICKING, (), "other_category", Determination.POTENTIALLY_ILLEGAL),
    ],
)
def test_each_case_is_dominated_by_its_expected_determination(
    category: Category | None, urls: tuple[str, ...], expected_case: str, dominant: Determination
) -> None:
    """Each case's most frequent determination is the expected one (CSAM with URLs mostly illegal...)."""
    counts: Counter[Determination] = Counter()
    for i in range(3000):
        decision = simulated.decide(classified(report_id=f"c-{i}", category=category, urls=urls), 7)
        assert decision.case == expected_case
        counts[decision.determination] += 1
    assert counts.most_common(1)[0][0] is dominant


def test_child_protection_only_for_illegal_reports_with_a_canadian_child() -> None:
    """Child protection is flagged only on potentially illegal reports naming a child located in Canada."""
    flagged = 0
    for i in range(2000):
        with_child = simulated.decide(classified(report_id=f"p-{i}", victim=canadian_victim()), 7)
        without = simulated.decide(classified(report_id=f"p-{i}"), 7)
        assert not without.child_may_need_protection
        if with_child.child_may_need_protection:
            assert with_child.determination is Determination.POTENTIALLY_ILLEGAL
            flagged += 1
    assert 0.52 * 0.8 * 2000 < flagged < 0.52 * 1.0 * 2000


def test_every_decision_is_labelled_simulated() -> None:
    """The actor is kind simulated with the seed in its id, and the note says it is not a human decision."""
    actor = simulated.simulated_actor(7)
    assert actor.kind is ActorKind.SIMULATED
    assert actor.id == "simulated:seed=7"
    assert "not a human decision" in simulated.decide(classified(), 7).note


@pytest.mark.parametrize(
    ("u", "expected"),
    [
        (0.0, Determination.POTENTIALLY_ILLEGAL),
        (0.519, Determination.POTENTIALLY_ILLEGAL),
        (0.521, Determination.NOT_ILLEGAL),
        (0.95, Determination.INFORMATIONAL),
        (0.9999, Determination.OUTSIDE_MANDATE),
    ],
)
def test_pick_follows_cumulative_shares(u: float, expected: Determination) -> None:
    """A uniform draw maps to the determination whose cumulative share band holds it."""
    assert simulated.pick(simulated.CSAM_WITH_CONTENT, u) is expected


@pytest.mark.parametrize(
    "shares",
    [
        simulated.CSAM_WITH_CONTENT,
        simulated.CSAM_WITHOUT_CONTENT,
        simulated.ONLINE_HARMS,
        simulated.LURING,
        simulated.UNCLASSIFIABLE,
        simulated.OTHER_CATEGORY,
    ],
)
def test_each_share_table_sums_to_one(shares: simulated.Shares) -> None:
    """Every case's determination shares add up to exactly one."""
    assert sum(shares) == pytest.approx(1.0)
