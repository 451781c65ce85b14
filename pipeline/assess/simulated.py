"""A simulated analyst: reproducible determinations for demos and load tests, never a real decision.

Every event it writes says so: actor kind ``simulated``, actor id ``simulated:seed=N``, and a note
beginning "Simulated determination". A decision is a pure function of the seed, the report id and the
classification: a hash of (seed, report id, purpose) gives a uniform draw, compared with probabilities
conditioned on the classified category and on what the report carries. The same seed over the same
reports gives the same decisions whichever simulated analyst claims which report, in whatever order.

The probabilities are tuned so that, on a realistic mix (CSAM about 75%, online harms 11%, luring 11%,
trafficking 1.4%, the rest small), about 45% of reports end potentially illegal and 55% not illegal,
informational or outside the mandate: the published Cybertip.ca split (``shared/domain/WORKFLOW.md``).
The outcome figures come from these rules and the pipeline's own, not from the report generator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pipeline.assess.logic import child_may_need_protection
from pipeline.events import Actor, ActorKind, Category, Determination, ReportClassified

# The determination shares for each case, as (potentially_illegal, not_illegal, informational,
# outside_mandate). Most CSAM reports with something to look at (URLs, files) hold illegal material;
# many others concern adult or legal content, hence the large not_illegal share. Online harms are
# mostly answered with information; an unclassifiable report is rarely illegal.
Shares = tuple[float, float, float, float]

CSAM_WITH_CONTENT: Shares = (0.52, 0.36, 0.09, 0.03)
CSAM_WITHOUT_CONTENT: Shares = (0.25, 0.45, 0.25, 0.05)
ONLINE_HARMS: Shares = (0.15, 0.10, 0.70, 0.05)
LURING: Shares = (0.55, 0.15, 0.27, 0.03)
UNCLASSIFIABLE: Shares = (0.05, 0.35, 0.55, 0.05)
OTHER_CATEGORY: Shares = (0.58, 0.17, 0.22, 0.03)
"""Trafficking, NCII of a minor, travelling, commercial exploitation, explicit material, arrangements."""

PROTECTION_SHARE = 0.9
"""Of potentially illegal reports naming a child located in Canada, how many the analyst also flags."""

_ORDER = (
    Determination.POTENTIALLY_ILLEGAL,
    Determination.NOT_ILLEGAL,
    Determination.INFORMATIONAL,
    Determination.OUTSIDE_MANDATE,
)


@dataclass(frozen=True, kw_only=True)
class SimulatedDecision:
    determination: Determination
    child_may_need_protection: bool
    note: str
    case: str


def simulated_actor(seed: int) -> Actor:
    return Actor(kind=ActorKind.SIMULATED, id=f"simulated:seed={seed}")


def draw(seed: int, report_id: str, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by the seed, the report and what it is drawn for."""
    digest = hashlib.blake2b(f"{seed}\x1f{report_id}\x1f{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def primary_category(event: ReportClassified) -> Category | None:
    """The category that decides the case: CSAM if any incident is CSAM, else the first one assigned."""
    assigned = [c.assigned_category for c in event.incidents if c.assigned_category is not None]
    if Category.CSAM in assigned:
        return Category.CSAM
    return assigned[0] if assigned else None


def case_of(event: ReportClassified) -> tuple[str, Shares]:
    category = primary_category(event)
    body = event.body
    has_content = any(inc.urls or inc.files for inc in body.incidents)
    match category:
        case Category.CSAM:
            return (
                ("csam_with_content", CSAM_WITH_CONTENT)
                if has_content
                else (
                    "csam_without_content",
                    CSAM_WITHOUT_CONTENT,
                )
            )
        case Category.ONLINE_HARMS:
            return "online_harms", ONLINE_HARMS
        case Category.LURING:
            return "luring", LURING
        case None:
            return "unclassifiable", UNCLASSIFIABLE
        case _:
            return "other_category", OTHER_CATEGORY


def pick(shares: Shares, u: float) -> Determination:
    acc = 0.0
    for determination, share in zip(_ORDER, shares, strict=True):
        acc += share
        if u < acc:
            return determination
    return _ORDER[-1]


def decide(event: ReportClassified, seed: int) -> SimulatedDecision:
    """The simulated analyst's determination on a classified report (pure, reproducible from ``seed``)."""
    report_id = event.envelope.report_id
    case, shares = case_of(event)
    determination = pick(shares, draw(seed, report_id, "determination"))
    protect = (
        determination is Determination.POTENTIALLY_ILLEGAL
        and child_may_need_protection(event.body)
        and draw(seed, report_id, "protection") < PROTECTION_SHARE
    )
    return SimulatedDecision(
        determination=determination,
        child_may_need_protection=protect,
        note=f"Simulated determination (seed={seed}, case {case}): not a human decision.",
        case=case,
    )
