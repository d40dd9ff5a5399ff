"""The harmful-flag variants tried before `select`'s default (evidence) was fixed, on one
bench level: the loss-misfit witness with 1, 5, 10 or 20 candidate kinds, at robust z
thresholds 2 and 3, on the loss or its log, alone or with the calibrated utility test.
Kept as the record of what was tried (issue 30 item 4); the default is k = min(10, n/200),
z > 2 on the loss, with the calibrated test. Then, reading the generator's family tags
(an oracle no user has): how well utility and loss separate clean from wrong within each
family, and the AUROC of the loss z taken within the true families.

    python benchmarks/noise_flags_variants.py runs/bench/noise-40
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score

from stepsift.bench.metrics import NOT_WRONG
from stepsift.select.misfit import loss_z_within_kind
from stepsift.select.reliability import calibrated_harmful
from stepsift.select.score_data import read_score_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("level", type=Path)
    args = p.parse_args()
    data = read_score_data(args.level / "scores.parquet")
    tags, families = {}, {}
    with open(args.level / "data" / "pool.jsonl", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            tags[record["id"]] = record["meta"]["noise"]
            families[record["id"]] = record["meta"]["family"]
    wrong = np.array([tags[i] not in NOT_WRONG for i in data.ids])
    tags_of = np.array([tags[i] for i in data.ids])
    calibrated = calibrated_harmful(data.utility, data.fold_utility, data.fold_sizes)
    sketch = data.sketch.astype(np.float64)
    unit = sketch / np.linalg.norm(sketch, axis=1, keepdims=True)
    print(f"{args.level}: {len(wrong)} candidates, {wrong.mean():.1%} wrong")
    print("| kinds | z on | threshold | with calibrated | flagged | precision | recall |")
    print("|---|---|---|---|---|---|---|")
    for k in (1, 5, 10, 20):
        kinds = (np.zeros(len(wrong), dtype=np.int64) if k == 1
                 else KMeans(k, n_init=4, random_state=0).fit_predict(unit))  # fmt: skip
        for name, values in (("loss", data.loss), ("log loss", np.log(data.loss))):
            z = loss_z_within_kind(values, kinds)
            for threshold in (2.0, 3.0):
                for with_cal in (False, True):
                    flags = (z > threshold) & (calibrated if with_cal else True)
                    print(f"| {k} | {name} | {threshold:g} | {'yes' if with_cal else 'no'} | "
                          f"{int(flags.sum())} | {wrong[flags].mean():.1%} | "
                          f"{flags[wrong].mean():.1%} |")  # fmt: skip
    family = np.array([families[i] for i in data.ids])
    print("\n| family (oracle) | candidates clean or wrong | wrong | AUROC utility | AUROC -loss |")
    print("|---|---|---|---|---|")
    for name in sorted(set(family)):
        m = (family == name) & ((tags_of == "clean") | wrong)
        if wrong[m].any() and (~wrong[m]).any():
            print(f"| {name} | {int(m.sum())} | {wrong[m].mean():.0%} | "
                  f"{roc_auc_score(~wrong[m], data.utility[m]):.3f} | "
                  f"{roc_auc_score(~wrong[m], -data.loss[m]):.3f} |")  # fmt: skip
    z = loss_z_within_kind(data.loss, np.unique(family, return_inverse=True)[1])
    m = (tags_of == "clean") | wrong
    print(f"\nAUROC of the loss z within the true families (oracle): "
          f"{roc_auc_score(~wrong[m], -z[m]):.3f}")


if __name__ == "__main__":
    main()
