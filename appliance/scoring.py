"""From probability to the 200–800 score officers see.

The score is linear in log-odds: 500 is even odds and every +50 points doubles the odds, so a
threshold means the same thing for every detector (patterns.md §4.4).
"""

from __future__ import annotations

import numpy as np

MIN_SCORE, MAX_SCORE, MIDPOINT, POINTS_PER_DOUBLING = 200, 800, 500, 50


def score_from_log2_odds(log2_odds: np.ndarray) -> np.ndarray:
    """Map log2-odds to integer scores clipped to 200–800."""
    raw = np.rint(MIDPOINT + POINTS_PER_DOUBLING * np.asarray(log2_odds, dtype=np.float64))
    return np.clip(raw, MIN_SCORE, MAX_SCORE).astype(np.int64)


def probability_from_log2_odds(log2_odds: np.ndarray) -> np.ndarray:
    """The probability whose odds are ``2 ** log2_odds``."""
    return 1.0 / (1.0 + np.exp2(-np.asarray(log2_odds, dtype=np.float64)))
