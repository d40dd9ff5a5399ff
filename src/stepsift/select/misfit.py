"""Does a candidate fit its own kind? The proxy's loss against that of similar candidates.

A wrong sample (a misread digit, a slipped step, an answer to another question) surprises
a proxy that has learned its format from the clean majority: its loss is high *for its
kind*. Across kinds the loss says little (a long chain-of-thought has a higher loss than
a one-word transcription, wrong or not; that is why the plain loss filter keeps the easy
formats and starves the target), so it is compared only within a kind.

Kinds are not labelled, so they are found: k-means on the candidates' unit gradient
sketches (the score file's `sketch` column: samples of one format and task move the proxy
the same way), with k = min(MAX_KINDS, n // MIN_PER_KIND) so that each kind has on average
enough candidates for a robust median and spread; no sketch, or too few candidates: one
kind. Within its kind, a candidate's robust z is (loss - median) / (1.4826 · MAD), the
MAD scaled to a standard deviation under normality; it *misfits* when z > MISFIT_Z.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

MAX_KINDS = 10
MIN_PER_KIND = 200
MISFIT_Z = 2.0
SEED = 0


def candidate_kinds(sketch: np.ndarray | None, n: int) -> np.ndarray:
    """A kind label per candidate (all 0 when there is no sketch or too few candidates)."""
    k = min(MAX_KINDS, n // MIN_PER_KIND)
    if sketch is None or k < 2:
        return np.zeros(n, dtype=np.int64)
    x = np.asarray(sketch, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return KMeans(n_clusters=k, n_init=4, random_state=SEED).fit_predict(unit).astype(np.int64)


def loss_z_within_kind(loss: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Each candidate's robust z of its loss among the candidates of its kind (0 where the
    kind's spread is 0)."""
    loss = np.asarray(loss, dtype=np.float64)
    z = np.zeros_like(loss)
    for kind in np.unique(kinds):
        members = kinds == kind
        values = loss[members]
        median = np.median(values)
        spread = 1.4826 * np.median(np.abs(values - median))
        z[members] = (values - median) / spread if spread > 0 else 0.0
    return z

