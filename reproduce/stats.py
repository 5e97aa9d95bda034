"""The statistics of the reports: a paper's claim about its table, tested on the records of this project's runs.

A claim (``table.claims`` in ``conf/experiment/<table>.yaml``) says one side of a table beats another:

    claims:
      - says: "LSTM beats LSTM6 on IMDB (the paper's Table 4)"
        better: {row: lstm, column: eta=1e-3}
        worse: {row: lstm6, column: eta=1e-3}

Each side is the values of one (row, column) of the table over seeds (accuracy: higher is better; ``lower_is_better:
true`` for perplexity, NLL). The test is Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``, one-sided in
the claim's direction), its p-value multiplied by the number of claims of the table (Bonferroni) and capped at 1. The
verdict is "reproduced" (p < 0.05), "not reproduced" (otherwise), or "too few seeds" (fewer than 2 values on a side):
always from this project's numbers, never from the paper's.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

ALPHA = 0.05


def welch(better: Sequence[float], worse: Sequence[float], lower_is_better: bool = False) -> float:
    """One-sided p-value of Welch's t-test that ``better`` beats ``worse`` (its mean higher, or lower when
    ``lower_is_better``). Needs at least 2 values a side."""
    from scipy import stats

    alternative = "less" if lower_is_better else "greater"
    return float(stats.ttest_ind(better, worse, equal_var=False, alternative=alternative).pvalue)


def bonferroni(p: float, tests: int) -> float:
    return min(1.0, p * tests)


def summary(values: Sequence[float]) -> str:
    if not values:
        return "not run"
    mean = statistics.fmean(values)
    return f"{mean:.4g} +- {statistics.stdev(values):.2g} (n={len(values)})" if len(values) > 1 else \
        f"{mean:.4g} (n=1)"


def check_claims(claims: Sequence[dict], values: dict[tuple[str, str], list[float]]) -> list[dict]:
    """Each claim with its two sides' values (``values``: {(row, column): [value per seed]}), the Bonferroni-corrected
    p-value and the verdict: [{"says", "better", "worse", "p", "verdict"}]."""
    out = []
    for claim in claims:
        a = values.get((claim["better"]["row"], claim["better"]["column"]), [])
        b = values.get((claim["worse"]["row"], claim["worse"]["column"]), [])
        p = None
        if min(len(a), len(b)) < 2:
            verdict = "too few seeds"
        else:
            p = bonferroni(welch(a, b, bool(claim.get("lower_is_better"))), len(claims))
            verdict = "reproduced" if p < ALPHA else "not reproduced"
        out.append({"says": claim["says"], "better": summary(a), "worse": summary(b), "p": p, "verdict": verdict})
    return out


def p_text(p: float | None) -> str:
    return "—" if p is None or math.isnan(p) else f"{p:.2g}"
