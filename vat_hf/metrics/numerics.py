"""Generic numerics of the VAT metric: nothing here knows about values, scenes or gains.

* inequality and multiple testing: :func:`gini` / :func:`gini_rows`, :func:`holm`;
* intervals: :func:`percentile_interval` (NaN-aware, infinite samples allowed), :func:`interval_list`;
* resampling: :func:`bootstrap_multiplicities`, :func:`sign_flips`, :func:`permutation_pvalue`;
* rank statistics on weighted samples: :func:`weighted_ranks`, :func:`spearman_batch`,
  :func:`spearman_pairwise`, :func:`t_pvalue`, :func:`kendall_tau_rows`.

scipy has ``rankdata``, ``spearmanr``, ``kendalltau`` and ``false_discovery_control`` (BH, not
Holm), but each works on one sample at a time; a bootstrap or a permutation null needs the same
statistic for thousands of weighted resamples at once, which is what these functions vectorise.
Each is checked against scipy in the tests.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Dict, Optional, Tuple

import numpy as np
from scipy import stats

__all__ = [
    "MIN_PAIRS",
    "bootstrap_multiplicities",
    "gini",
    "gini_rows",
    "holm",
    "interval_list",
    "kendall_tau_rows",
    "percentile_interval",
    "permutation_pvalue",
    "sign_flips",
    "spearman_batch",
    "spearman_pairwise",
    "t_pvalue",
    "weighted_ranks",
]

MIN_PAIRS = 3  # fewest common observations for a correlation to be reported


# --------------------------------------------------------------------------------------------
# inequality, multiple testing


def gini(x) -> Optional[float]:
    """Gini coefficient of non-negative numbers: 0 when all are equal, ``(n - 1) / n`` when one
    holds everything (the population normalisation ``sum_ij |x_i - x_j| / (2 n^2 mean)``).
    NaNs are ignored; all zeros gives 0 (perfectly even); no numbers gives ``None``.

    >>> gini([1, 1, 1, 1])
    0.0
    >>> gini([0, 0, 0, 2])
    0.75
    >>> round(gini([1, 2, 3, 4]), 4)
    0.25
    """
    out = gini_rows(np.asarray(x, dtype=float).reshape(1, -1))[0]
    return None if np.isnan(out) else float(out)


def gini_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise Gini of a (rows, n) array of non-negative numbers (absolute values are taken),
    NaN = missing; NaN for a row with no numbers."""
    x = np.abs(np.asarray(x, dtype=float))
    valid = ~np.isnan(x)
    n = valid.sum(axis=1)
    xs = np.sort(x, axis=1)  # NaNs sort last
    xs = np.where(np.isnan(xs), 0.0, xs)
    i = np.arange(1, x.shape[1] + 1)[None, :]
    coef = np.where(i <= n[:, None], 2 * i - n[:, None] - 1, 0)
    total = xs.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = (coef * xs).sum(axis=1) / (n * total)
    g = np.where(total == 0, 0.0, g)
    return np.where(n == 0, np.nan, g)


def holm(pvalues) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order; NaNs pass through untouched
    (and do not count in the family).

    >>> holm([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adj, 1.0)
    return out


# --------------------------------------------------------------------------------------------
# intervals

_BIG = 1e300  # stands in for +-inf inside np.percentile (inf - inf would give NaN when interpolating)


def percentile_interval(samples, confidence: float, lower_samples=None) -> Tuple[np.ndarray, np.ndarray]:
    """Percentile interval ``(low, high)`` along axis 0 at level ``confidence``, NaN-aware (NaN
    samples are left out; NaN where no sample is a number). Samples may be ``+-inf``: a bound that
    falls on an infinite sample is infinite (an interval unbounded on that side).

    ``lower_samples`` (same shape), when given, is used for the low quantile and ``samples`` for
    the high one: a statistic that is undefined in some resamples can be put at ``-inf`` for the
    lower bound and ``+inf`` for the upper, so those resamples widen the interval on both sides.

    >>> lo, hi = percentile_interval(np.array([1.0, 2.0, 3.0, np.inf]), 0.5)
    >>> float(lo), float(hi)
    (1.75, inf)
    """
    a = (1.0 - confidence) / 2.0
    hi_s = np.asarray(samples, dtype=float)
    lo_s = hi_s if lower_samples is None else np.asarray(lower_samples, dtype=float)

    def q(x: np.ndarray, level: float) -> np.ndarray:
        clipped = np.clip(x, -_BIG, _BIG)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = np.nanpercentile(clipped, 100 * level, axis=0)
        # interpolating toward a stand-in gives a huge number: the bound is infinite
        out = np.where(out >= _BIG * 1e-20, np.inf, np.where(out <= -_BIG * 1e-20, -np.inf, out))
        return np.where((~np.isnan(x)).any(axis=0), out, np.nan)

    return q(lo_s, a), q(hi_s, 1.0 - a)


def interval_list(lo, hi):
    """JSON form of intervals: ``[low, high]`` floats, ``None`` for an infinite bound (unbounded on
    that side) and ``None`` instead of the list where no interval exists (NaN). Scalars give one
    interval, arrays a list of them.

    >>> interval_list(0.1, np.inf), interval_list(np.nan, np.nan)
    ([0.1, None], None)
    """
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)

    def one(l: float, h: float):
        if np.isnan(l) or np.isnan(h):
            return None
        return [float(l) if np.isfinite(l) else None, float(h) if np.isfinite(h) else None]

    if lo.ndim == 0:
        return one(float(lo), float(hi))
    return [one(float(l), float(h)) for l, h in zip(lo, hi)]


# --------------------------------------------------------------------------------------------
# resampling


def bootstrap_multiplicities(rng: np.random.Generator, n_resamples: int, n_units: int) -> np.ndarray:
    """How often each of ``n_units`` units is drawn in each of ``n_resamples`` bootstrap resamples
    (with replacement, ``n_units`` draws each): an ``(n_resamples, n_units)`` float array whose
    rows sum to ``n_units``. Draws ``rng.integers(0, n_units, (n_resamples, n_units))``."""
    idx = rng.integers(0, n_units, size=(n_resamples, n_units))
    flat = (np.arange(n_resamples)[:, None] * n_units + idx).ravel()
    return np.bincount(flat, minlength=n_resamples * n_units).reshape(n_resamples, n_units).astype(float)


def sign_flips(rng: np.random.Generator, n_units: int, n_flips: int) -> Tuple[np.ndarray, bool]:
    """Sign vectors for a sign-flip permutation test over ``n_units`` units: ``(signs, exact)``.

    When ``2 ** n_units <= n_flips`` every sign vector is enumerated (``exact=True``; the
    identity is among them); otherwise ``n_flips`` random vectors (``exact=False``).

    >>> s, exact = sign_flips(np.random.default_rng(0), 2, 100)
    >>> s.tolist(), exact
    ([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], True)
    """
    if n_units <= 20 and 2 ** n_units <= n_flips:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n_units)), dtype=float).reshape(-1, n_units)
        return signs, True
    return rng.integers(0, 2, size=(n_flips, n_units)).astype(float) * 2.0 - 1.0, False


def permutation_pvalue(observed, null: np.ndarray, exact: bool) -> np.ndarray:
    """One-sided permutation p-value of ``observed`` (statistic(s), larger = more extreme) against
    ``null`` (``(n, ...)`` statistics under the permutations). With an exact enumeration (which
    holds the identity) ``count / n``; with random permutations ``(1 + count) / (1 + n)``, never 0
    (the smallest is ``1 / (n + 1)``: the permutation floor). Ties count as extreme (a relative
    tolerance of 1e-10 absorbs rounding). NaN where ``observed`` or every null value is NaN."""
    observed = np.asarray(observed, dtype=float)
    null = np.asarray(null, dtype=float)
    tol = 1e-10 * np.maximum(1.0, np.abs(observed))
    valid = ~np.isnan(null)
    count = ((null >= observed - tol) & valid).sum(axis=0)
    n = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = count / n if exact else (1.0 + count) / (1.0 + n)
    return np.where(np.isnan(observed) | (n == 0), np.nan, p)


# --------------------------------------------------------------------------------------------
# rank statistics on weighted samples


def t_pvalue(r: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Two-sided p-value of a correlation r on k observations (t with k-2 df, as scipy)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        df = k - 2.0
        t = r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
        p = 2.0 * stats.t.sf(np.abs(t), df)
    p = np.where(np.abs(r) >= 1.0, 0.0, p)
    return np.where(np.isnan(r) | (k < 3), np.nan, p)


def weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank, as ``scipy.stats.rankdata``) of the values ``x``
    (k,) within the multiset where value ``x_t`` occurs ``w[t, b]`` times, for each column b of
    the multiplicities ``w`` (k x B). One sort, then cumulative sums: no per-resample loop.

    >>> weighted_ranks(np.array([3.0, 1.0, 3.0]), np.array([[1.0, 2.0], [1.0, 1.0], [1.0, 1.0]])).T.tolist()
    [[2.5, 1.0, 2.5], [3.0, 1.0, 3.0]]
    """
    order = np.argsort(x, kind="stable")
    xs = x[order]
    cs = np.cumsum(w[order], axis=0)  # weight up to and including each sorted observation
    new = np.r_[True, xs[1:] != xs[:-1]]
    if new.all():  # no ties: rank = weight strictly below + (own weight + 1) / 2
        rs = cs - 0.5 * w[order] + 0.5
    else:  # ties share the group's mean rank: (weight below group + weight through group + 1) / 2
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], xs.size] - 1
        grp = np.cumsum(new) - 1
        below = np.where((starts > 0)[:, None], cs[np.maximum(starts - 1, 0)], 0.0)
        rs = ((below + cs[ends] + 1.0) / 2.0)[grp]
    r = np.empty_like(rs)
    r[order] = rs
    return r


def spearman_batch(xs: np.ndarray, counts: np.ndarray, pairs=None, chunk_elems: int = 4_000_000):
    """Spearman correlation of the columns of ``xs`` (observations x variables, NaN = missing) on
    weighted samples given as multiplicities ``counts`` (B x observations: how often each
    observation is drawn; a row of ones is the data itself), each pair on the observations where
    both are present (pairwise complete); an observation drawn twice counts twice (ties in the
    ranks).

    Returns ``rho`` (B x V x V; NaN where fewer than :data:`MIN_PAIRS` observations or a constant
    column) and ``k`` (B x V x V pairwise counts). Pairs sharing a presence mask (all of them
    when nothing is missing) are ranked and correlated together.
    """
    S, U = xs.shape
    B = counts.shape[0]
    present = ~np.isnan(xs)
    xs = np.round(xs, 12)  # the same number computed along different paths ties exactly
    rho = np.full((B, U, U), np.nan)
    kk = np.zeros((B, U, U))
    if pairs is None:
        pairs = [(i, j) for i in range(U) for j in range(i, U)]
    groups: Dict[bytes, list] = {}
    masks: Dict[bytes, np.ndarray] = {}
    for i, j in pairs:
        m = present[:, i] & present[:, j]
        if m.sum() < MIN_PAIRS:
            continue
        key = m.tobytes()
        groups.setdefault(key, []).append((i, j))
        masks[key] = m
    counts_t = np.ascontiguousarray(np.asarray(counts, dtype=float).T)  # S x B: observations on axis 0
    prepared = []
    for key, gpairs in groups.items():
        units = sorted({u for p in gpairs for u in p})
        pos = {u: a for a, u in enumerate(units)}
        prepared.append((masks[key], units, np.array([pos[i] for i, _ in gpairs]),
                         np.array([pos[j] for _, j in gpairs]), np.array([i for i, _ in gpairs]),
                         np.array([j for _, j in gpairs])))
    step = max(1, chunk_elems // max(1, S * U))
    for b0 in range(0, B, step):
        w_all = counts_t[:, b0:b0 + step]  # (S, b)
        b = w_all.shape[1]
        for m, units, gi, gj, ui, uj in prepared:
            w = w_all[m]  # (k, b) multiplicities of the mask's observations
            kb = w.sum(axis=0)
            sw = np.sqrt(w)
            half = (kb + 1.0) / 2.0
            rc = np.stack([(weighted_ranks(xs[m, u], w) - half) * sw for u in units])  # (u, k, b)
            if len(gi) > 3:
                r3 = np.ascontiguousarray(rc.transpose(2, 0, 1))  # (b, u, k)
                cross = np.matmul(r3, r3.transpose(0, 2, 1))  # (b, u, u) weighted co-moments
            else:
                cross = np.zeros((b, len(units), len(units)))
                for a in range(len(units)):
                    cross[:, a, a] = np.einsum("tb,tb->b", rc[a], rc[a])
                for a, c in zip(gi, gj):
                    cross[:, a, c] = np.einsum("tb,tb->b", rc[a], rc[c])
            _store_pairs(rho, kk, slice(b0, b0 + b), cross, kb, gi, gj, ui, uj)
    return rho, kk


def _store_pairs(rho, kk, rows, cross, k, gi, gj, ui, uj) -> None:
    """Correlations of the pairs (gi, gj) of a cross-product block into rho[rows, ui, uj]."""
    d = np.sqrt(np.maximum(np.einsum("bii->bi", cross), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = cross[:, gi, gj] / (d[:, gi] * d[:, gj])
    tiny = 1e-9 * np.maximum(1.0, k)[:, None]  # a constant column: zero variance up to rounding
    c = np.where((k[:, None] >= MIN_PAIRS) & (d[:, gi] > tiny) & (d[:, gj] > tiny), c, np.nan)
    c = np.clip(np.round(c, 12), -1.0, 1.0)  # exact +-1 for perfectly (anti-)monotone columns
    rho[rows, ui, uj] = c
    rho[rows, uj, ui] = c
    kk[rows, ui, uj] = k[:, None]
    kk[rows, uj, ui] = k[:, None]


def spearman_pairwise(x) -> tuple:
    """Pairwise-complete Spearman correlations of the columns of ``x`` (rows = observations,
    NaN = missing): ``(rho, pvalues, n)``, NaN where a pair has fewer than 3 common rows or a
    column is constant there. Matches ``scipy.stats.spearmanr`` on each pair's complete rows.

    >>> rho, p, n = spearman_pairwise([[1, 2, 9], [2, 4, 8], [3, 6, 7], [4, 8, np.nan]])
    >>> rho.tolist()
    [[1.0, 1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]
    >>> n.astype(int).tolist()
    [[4, 4, 3], [4, 4, 3], [3, 3, 3]]
    """
    x = np.asarray(x, dtype=float)
    rho, k = spearman_batch(x, np.ones((1, x.shape[0])))
    return rho[0], t_pvalue(rho[0], k[0]), k[0]


def kendall_tau_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between each row of ``x`` and the same row of ``y`` (both (B, n); NaN =
    missing, left out pairwise), as ``scipy.stats.kendalltau``; NaN where fewer than 2 common
    entries or a row is constant there. Values are rounded to 12 digits first, so numbers equal
    up to rounding tie.

    >>> kendall_tau_rows(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), np.array([[1.0, 3.0, 2.0], [3.0, 2.0, 1.0]])).round(4).tolist()
    [0.3333, -1.0]
    """
    x = np.round(np.atleast_2d(np.asarray(x, dtype=float)), 12)
    y = np.round(np.atleast_2d(np.asarray(y, dtype=float)), 12)
    ok = ~np.isnan(x) & ~np.isnan(y)
    i, j = np.triu_indices(x.shape[1], 1)
    both = ok[:, i] & ok[:, j]
    sx = np.where(both, np.sign(np.nan_to_num(x[:, i] - x[:, j])), 0.0)
    sy = np.where(both, np.sign(np.nan_to_num(y[:, i] - y[:, j])), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sx * sy).sum(axis=1) / np.sqrt((sx ** 2).sum(axis=1) * (sy ** 2).sum(axis=1))
    return np.where(ok.sum(axis=1) >= 2, tau, np.nan)

