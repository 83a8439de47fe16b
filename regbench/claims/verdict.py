"""A claim's verdict as one typed object: the headline label, the decisions it comes from, and the why.

Every directional claim asks two questions, each decided by its own one-sided tests (regbench.claims.stats):
its **direction** (is the mean effect on the claimed side of the line? established, contradicted or
undecided) and its **size** (is the mean effect shown smaller than the smallest effect of interest?). The
label is derived from both, so a claim whose direction holds is never labelled as if it were false:

    direction established, size not shown smaller   -> "reproduced"
    direction established, shown smaller             -> "reproduced, smaller than published"
    direction undecided,   shown smaller             -> "no effect of the published size"
    direction contradicted                           -> "contradicted"
    neither                                          -> "undecided"

A band claim (a level, or sameness within a margin) is "reproduced" when its interval lies inside the
band, "contradicted" when wholly outside, else "undecided". ``label`` is the family-wise verdict (every
decision of every claim in one Holm family, regbench.claims.family); ``label_alone`` judges the claim
alone, each decision at alpha.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REPRODUCED = "reproduced"
SMALLER = "reproduced, smaller than published"
UNDECIDED = "undecided"
NO_SIZE = "no effect of the published size"
CONTRADICTED = "contradicted"
NOT_RUN = "not run"
LABELS = (REPRODUCED, SMALLER, UNDECIDED, NO_SIZE, CONTRADICTED, NOT_RUN)
LABEL_CODES: dict[str, int | None] = {
    REPRODUCED: 2,
    SMALLER: 1,
    UNDECIDED: 0,
    NO_SIZE: -1,
    CONTRADICTED: -2,
    NOT_RUN: None,
}

# The two questions' answers.
ESTABLISHED, WRONG_SIDE, OPEN, NOT_TESTED = "established", "contradicted", "undecided", "not tested"
SHOWN_SMALLER, NOT_SMALLER = "smaller than the smallest effect", "not shown smaller"


def directional_label(direction: str, size: str) -> str:
    """The headline label from the direction and size decisions (the table in the module docstring)."""
    if direction == ESTABLISHED:
        return SMALLER if size == SHOWN_SMALLER else REPRODUCED
    if direction == WRONG_SIDE:
        return CONTRADICTED
    return NO_SIZE if size == SHOWN_SMALLER else UNDECIDED


def band_label(inside: bool, outside: bool) -> str:
    return REPRODUCED if inside else CONTRADICTED if outside else UNDECIDED


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict; /work/coord/verdict.md and the report's first page read these fields."""

    claim_id: str
    label: str  # headline: family-wise (LABELS)
    label_alone: str  # this claim alone, each decision at alpha
    code: int | None  # LABEL_CODES[label]
    why: str  # one plain sentence for a reader
    kind: str  # "directional" | "band" | "not run"
    direction: str  # family-wise: established | contradicted | undecided | not tested
    size: str  # family-wise: not shown smaller | smaller than the smallest effect | undecided | not tested
    statistic: str  # the test, in words
    unit: str  # the units of mean, interval, line, smallest effect, published value
    repeats: int
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None  # two-sided level of the interval (the deciding look's)
    line: float | None = None
    smallest_effect: float | None = None
    published_value: float | None = None
    published: str = ""
    prediction_low: float | None = None  # prediction interval for one run's value, at claims.confidence
    prediction_high: float | None = None
    published_plausible: bool | None = None  # the published figure inside it
    improvement: float | None = None  # share of seeds on the claimed side, ties one half
    p_family: float | None = None  # smallest Holm-adjusted p of the claim's decisions
    stopped: str = ""
    look_chances: tuple[tuple[int, float], ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        for name in ("label", "label_alone"):
            if getattr(self, name) not in LABELS:
                raise ValueError(f"Verdict.{name} = {getattr(self, name)!r}: must be one of {LABELS}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "look_chances": [list(pair) for pair in self.look_chances]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        fields["look_chances"] = tuple((int(n), float(p)) for n, p in data.get("look_chances", ()))
        return cls(**fields)


def load_verdicts(detail: Mapping[str, Any]) -> dict[str, Verdict]:
    """Every claim's Verdict from the claims stage's reports/claims_detail.json (parsed), in registry order."""
    return {claim_id: Verdict.from_dict(entry["decision"]) for claim_id, entry in detail["claims"].items()}
