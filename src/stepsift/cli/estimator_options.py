"""`score`'s options that choose the estimator and the step it simulates."""

from __future__ import annotations

import argparse

from stepsift.engine.scorer import DEFAULT_SGD_LR
from stepsift.engine.settings import DEFAULT_OPTIMIZER, METHODS, ScoreSettings
from stepsift.utility.anchor_groups import GROUP_MODES
from stepsift.utility.gradients import AUTOCASTS
from stepsift.utility.steps import OPTIMIZERS


def add_estimator_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        choices=METHODS,
        default=ScoreSettings.method,
        help="utility estimator (see README: cost and agreement with exact)",
    )
    p.add_argument(
        "--less-dim",
        type=int,
        default=ScoreSettings.less_dim,
        help="projection size for --method less",
    )
    p.add_argument(
        "--exact-anchors",
        type=int,
        default=ScoreSettings.exact_anchors,
        help="for --method anchor-subsample: how many of the anchors (a seeded random "
        "subset) the exact utility is evaluated on",
    )
    p.add_argument(
        "--forward-directions",
        type=int,
        default=ScoreSettings.forward_directions,
        metavar="K",
        help="for --method forward: the strongest curvature directions of the anchors' "
        "Gauss-Newton matrix its second-order term is kept to (each adds about one "
        "forward-mode tangent per candidate; 0: first order only)",
    )
    p.add_argument(
        "--streamed-sketch",
        action="store_true",
        help="for --method curvature: build the Gauss-Newton sketch through a frequent-"
        "directions buffer, so its set-up memory is (4 x 64 + 32) parameter vectors "
        "instead of up to 1 GiB (it ranked worse under Adam: see README)",
    )
    p.add_argument(
        "--label-draws",
        type=int,
        default=ScoreSettings.label_draws,
        metavar="K",
        help="for --method curvature: sampled-label gradients per anchor its Gauss-Newton "
        "sketch is built from (set-up cost grows with K; more draws, less sketch noise)",
    )
    p.add_argument(
        "--grad-autocast",
        choices=AUTOCASTS,
        default=ScoreSettings.grad_autocast,
        help="for --method curvature or less: take the candidates' per-sample gradients "
        "under bfloat16 autocast (for a GPU; the anchors' state and the audit stay full "
        "precision; see README)",
    )
    p.add_argument(
        "--audit",
        type=int,
        default=ScoreSettings.audit,
        metavar="N",
        help="with a method other than exact: also score N random candidates exactly and "
        "record how well the method's ranking agrees (Spearman ρ, top-20%% overlap) in the "
        "score file; default the larger of 128 and 1%% of the pool; 0: off",
    )
    p.add_argument(
        "--anchor-folds",
        type=int,
        default=ScoreSettings.anchor_folds,
        metavar="K",
        help="also score each candidate on K disjoint anchor folds (fold_utility column; "
        "what select's reliability and calibrated harmful flags use); 0: off",
    )
    p.add_argument(
        "--anchor-group-field",
        default=ScoreSettings.anchor_group_field,
        metavar="NAME",
        help="anchor records' field naming their group (task, benchmark, ...): a utility per "
        "group (group_utility column) when the anchors carry it; a dotted NAME reaches into "
        "nested objects (meta.task); '' ignores any such field",
    )
    p.add_argument(
        "--anchor-groups",
        choices=GROUP_MODES,
        default=ScoreSettings.anchor_groups,
        help="auto: the field's groups when the anchors carry it, else groups found from the "
        "proxy (anchors that the same candidates help, clustered; the number of groups by "
        "stability, none when no split is stable); field: the field's groups only; off: no "
        "groups (select then takes the plain top-k)",
    )
    p.add_argument(
        "--sketch-dim",
        type=int,
        default=ScoreSettings.sketch_dim,
        metavar="D",
        help="keep a D-dim random projection of each candidate's gradient (sketch column, for "
        "select --diverse); 0: off",
    )
    p.add_argument(
        "--params",
        default=ScoreSettings.params,
        help="parameters the simulated step moves: all, lora, or a regex on their names",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=DEFAULT_OPTIMIZER,
        help="whose first step to simulate (adam continues the warm-up's state)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"step size; default {DEFAULT_SGD_LR} for sgd, the warm-up's lr for adam",
    )
