"""A claim's verdict: the verdict, its evidence ending in its conclusion, and a short reason (analysis/claims.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable"


class Verdict(NamedTuple):
    """A claim's verdict, its evidence (criterion, numbers, conclusion) and the short reason for the verdict."""

    verdict: str
    evidence: str
    reason: str


REASON_MAX = 90  # characters of a reason: it fits a table cell


def conclude(verdict: str, evidence: str, *reasons: str) -> Verdict:
    """The verdict with its evidence ending in the reason; the first of ``reasons`` that fits ``REASON_MAX``."""
    reason = next((r for r in reasons if len(r) <= REASON_MAX), reasons[-1][:REASON_MAX - 3] + "...")
    evidence = f"{evidence.rstrip('. ')}. {verdict.capitalize()}: {reason}"
    return Verdict(verdict, evidence, reason)


def watts(x: float) -> str:
    """``288 W``."""
    return f"{x:.0f} W"


def pct(x: float) -> str:
    """A share as ``12.3 %``."""
    return f"{100 * x:.1f} %"


def ci(lo: float, hi: float, fmt: Callable[[float], str]) -> str:
    """An interval as ``[lo, hi]``, each end formatted by ``fmt``."""
    return f"[{fmt(lo)}, {fmt(hi)}]"
