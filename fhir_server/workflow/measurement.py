"""Measurement-based care: did referred patients get better?

For a referral whose care started (first in-progress), per instrument (PHQ-9, GAD-7):
  baseline   the latest total scored in the `BASELINE_LOOKBACK` before the referral was made
  follow-up  the latest total scored 4 to 12 weeks after care started (both ends included)
A referral with both is a *pair*. Over the pairs of a group:
  mean change  mean of (follow-up - baseline), negative is better
  response     follow-up at most half the baseline (a drop of 50 % or more)
  remission    follow-up below 5
Response and remission are counted among the pairs whose baseline shows at least moderate
symptoms (`ELEVATED_BASELINE`, 10 on both instruments), as clinical quality measures do
(a patient who starts at 3 has nothing to respond or remit from); the mean change counts
every pair. Scores come from the total-score Observations (LOINC 44261-6, 70274-6) with
status final, amended or corrected; the server derives them from every scored response.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DAY_US = 86_400 * 1_000_000
WEEK_US = 7 * DAY_US
BASELINE_LOOKBACK_US = 90 * DAY_US
FOLLOW_UP_FROM_US = 4 * WEEK_US
FOLLOW_UP_TO_US = 12 * WEEK_US
ELEVATED_BASELINE = 10
REMISSION_BELOW = 5

LOINC = "http://loinc.org"
INSTRUMENTS: dict[str, tuple[str, str]] = {
    "phq-9": ("44261-6", "PHQ-9"),
    "gad-7": ("70274-6", "GAD-7"),
}
"""Instrument code -> (LOINC code of the total score, its name)."""
_BY_LOINC = {loinc: code for code, (loinc, _name) in INSTRUMENTS.items()}
COUNTED_STATUSES = frozenset({"final", "amended", "corrected"})


@dataclass(frozen=True)
class Score:
    instrument: str  # "phq-9" | "gad-7"
    value: int
    effective: int  # epoch microseconds


def score_of(observation: dict, effective: int | None) -> Score | None:
    """The total score an Observation records (None when it is not a counted PHQ-9/GAD-7
    total). `effective` is its effective time in epoch microseconds (computed by the caller
    from effectiveDateTime, effectivePeriod.start or issued)."""
    if observation.get("status") not in COUNTED_STATUSES or effective is None:
        return None
    instrument = next((_BY_LOINC[c.get("code")] for c in
                       (observation.get("code") or {}).get("coding") or []
                       if c.get("system") == LOINC and c.get("code") in _BY_LOINC), None)
    if instrument is None:
        return None
    value = observation.get("valueInteger")
    if value is None:
        value = (observation.get("valueQuantity") or {}).get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        return None
    return Score(instrument, int(value), effective)


def effective_time(observation: dict) -> str | None:
    """The FHIR dateTime an Observation's score belongs to."""
    return (observation.get("effectiveDateTime")
            or (observation.get("effectivePeriod") or {}).get("start")
            or observation.get("effectiveInstant") or observation.get("issued"))


def baseline_window(referred_at: int) -> tuple[int, int]:
    """[low, high] of a baseline's effective time (both included)."""
    return referred_at - BASELINE_LOOKBACK_US, referred_at


def follow_up_window(started_at: int) -> tuple[int, int]:
    """[low, high] of a follow-up's effective time (both included)."""
    return started_at + FOLLOW_UP_FROM_US, started_at + FOLLOW_UP_TO_US


def latest_in(scores: Iterable[Score], instrument: str, low: int, high: int) -> Score | None:
    """The latest score of `instrument` with low <= effective <= high (the reference for the
    SQL that picks baselines and follow-ups)."""
    inside = [s for s in scores if s.instrument == instrument and low <= s.effective <= high]
    return max(inside, key=lambda s: s.effective, default=None)


@dataclass
class Pairs:
    """The baseline/follow-up pairs of one group for one instrument."""

    count: int = 0
    eligible: int = 0  # baseline >= ELEVATED_BASELINE
    responders: int = 0
    remitters: int = 0
    change_sum: int = 0

    def add(self, baseline: int, follow_up: int) -> None:
        self.count += 1
        self.change_sum += follow_up - baseline
        if baseline >= ELEVATED_BASELINE:
            self.eligible += 1
            self.responders += int(follow_up * 2 <= baseline)
            self.remitters += int(follow_up < REMISSION_BELOW)

    @property
    def mean_change(self) -> float | None:
        return self.change_sum / self.count if self.count else None
