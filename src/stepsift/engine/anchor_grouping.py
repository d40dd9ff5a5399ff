"""Which anchor groups a run scores towards: the anchors' own field, groups found from the
proxy (utility/anchor_groups.py), or none (`--anchor-groups auto|field|off`).

Groups are found once per run, after the warm-up, and saved beside the run's proxy as
`anchor-groups.json` with a fingerprint of the proxy, anchors and step rule, so that every
worker (the local scorer, Ray actors, shards, a resumed run) scores towards the same
groups without finding them again.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stepsift.data.atomic import atomic_write_text
from stepsift.data.index import RecordIndex
from stepsift.data.record import Record
from stepsift.engine.anchor_state import locked, state_fingerprint
from stepsift.engine.settings import ScoreSettings
from stepsift.proxy.base import Batch, Proxy
from stepsift.utility.anchor_groups import PROBE, FoundGroups, find_anchor_groups
from stepsift.utility.anchor_views import group_labels
from stepsift.utility.registry import VIEWS
from stepsift.utility.steps import StepRule

FILE = "anchor-groups.json"


def group_field(settings: ScoreSettings) -> str:
    """The anchors' group field the run reads ('' when groups are off)."""
    return "" if settings.anchor_groups == "off" else settings.anchor_group_field


def wants_found_groups(settings: ScoreSettings, anchor_records: Sequence[Record]) -> bool:
    """auto, a method that writes group utilities, and anchors without a group field:
    groups are found from the proxy."""
    if settings.anchor_groups != "auto" or settings.method not in VIEWS:
        return False
    return group_labels(anchor_records, settings.anchor_group_field) is None


def _fingerprint(proxy: Proxy, anchors: Batch, rule: StepRule, settings: ScoreSettings) -> str:
    decisive = {"params": settings.params, "seed": settings.seed, "probe": PROBE}
    return state_fingerprint("anchor-groups", decisive, proxy, anchors, rule)


def probe_batches(pool: RecordIndex, proxy: Proxy, batch_size: int, seed: int) -> list[Batch]:
    """A seeded random probe of up to PROBE candidates, collated in batches of like length
    (as scoring batches them: random lengths side by side would pad most of each batch)."""
    n = len(pool)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(n)[: min(PROBE, n)]] = True
    order = pool.length_order()
    positions = order[chosen[order]]
    return [
        proxy.collate(pool.load(positions[s : s + batch_size]))
        for s in range(0, len(positions), batch_size)
    ]


def found_groups(
    folder: Path,
    proxy: Proxy,
    anchors: Batch,
    rule: StepRule,
    settings: ScoreSettings,
    pool: RecordIndex | None = None,
) -> FoundGroups | None:
    """The run's found groups from `folder`, or, with `pool`, found now and saved there.
    None when the file is missing or was made for another proxy, anchors or step, and no
    pool was given to find them."""
    path = Path(folder) / FILE
    fingerprint = _fingerprint(proxy, anchors, rule, settings)
    with locked(path):
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("fingerprint") == fingerprint:
                return FoundGroups.from_dict(saved["groups"])
        if pool is None:
            return None
        batches = probe_batches(pool, proxy, settings.batch_size, settings.seed)
        shown = tqdm(batches, desc="anchor groups", unit="batch", leave=False, file=sys.stderr,
                     disable=not settings.progress, dynamic_ncols=True)  # fmt: skip
        found = find_anchor_groups(proxy, anchors, anchors.ids, shown, rule, settings.seed)
        payload = {"fingerprint": fingerprint, "groups": found.to_dict()}
        atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
        return found
