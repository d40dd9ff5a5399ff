"""Coverage selection: a subset that serves every part of the anchors' task.

One summed anchor loss rewards whatever part of the task it can move most: on a pool of
several kinds, the plain top-k by utility fills up with the one kind that moves the
anchors' largest group (or that transfers most cheaply), and the anchors' other groups
starve. With the anchors split into groups (a field of the anchor records, the score
file's `group_utility` column: a candidate's utility towards each group), coverage gives
each group a quota of the budget in proportion to its share of the anchors and fills it
with the candidates best for that group, by that group's own utility.

The quotas are filled in turns rather than one group after another, so that a candidate
two groups both want goes to the group that is furthest behind its quota: at each turn
the group with the largest unfilled share of its quota takes its best candidate not yet
taken. The order of the turns is the subset's order (best first) for `--order utility`.
"""

from __future__ import annotations

import numpy as np


def apportion(k: int, shares: np.ndarray) -> np.ndarray:
    """Integer quotas summing to k, proportional to `shares` (largest remainder; ties to the
    earlier group)."""
    shares = np.asarray(shares, dtype=np.float64)
    if k < 0 or shares.ndim != 1 or len(shares) == 0 or np.any(shares < 0) or shares.sum() <= 0:
        raise ValueError(f"cannot apportion {k} over shares {shares.tolist()}")
    exact = k * shares / shares.sum()
    quotas = np.floor(exact).astype(np.int64)
    left = k - int(quotas.sum())
    by_remainder = np.lexsort((np.arange(len(shares)), -(exact - quotas)))
    quotas[by_remainder[:left]] += 1
    return quotas


def coverage_order(
    group_utility: np.ndarray, shares: np.ndarray, k: int, tie: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the k candidates chosen, in the order chosen; the group each serves).

    `group_utility` is (n, G), `shares` the anchors' count per group (G,), `tie` a
    position per candidate that breaks equal utilities (lower first; e.g. the plain
    ranking's). A NaN utility ranks last within its group.
    """
    values = np.asarray(group_utility, dtype=np.float64)
    n, g = values.shape
    if len(shares) != g:
        raise ValueError(f"{g} utility columns but {len(shares)} group shares")
    k = min(int(k), n)
    quotas = apportion(k, shares)
    # each group's candidates from best to worst for it; NaN sorts last
    keyed = np.where(np.isnan(values), -np.inf, values)
    lists = [np.lexsort((tie, -keyed[:, j])) for j in range(g)]
    cursor = np.zeros(g, dtype=np.int64)
    filled = np.zeros(g, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    chosen = np.empty(k, dtype=np.int64)
    served = np.empty(k, dtype=np.int64)
    for turn in range(k):
        behind = np.where(filled < quotas, (quotas - filled) / np.maximum(quotas, 1), -1.0)
        j = int(np.argmax(behind))  # the first of the groups furthest behind
        order = lists[j]
        while taken[order[cursor[j]]]:
            cursor[j] += 1
        pick = int(order[cursor[j]])
        taken[pick] = True
        chosen[turn], served[turn] = pick, j
        filled[j] += 1
    return chosen, served
