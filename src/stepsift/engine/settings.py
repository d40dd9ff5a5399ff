"""What a `score` run is asked to do: its settings, and the names they choose from.

Its own module so that everything that drives a run (scoring.py, the Scorer a worker
builds, the Ray engine) can import it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stepsift.engine.shards import Shard
from stepsift.proxy.hf_loading import HF_DTYPES, HFOptions
from stepsift.proxy.warmup import WarmupSettings
from stepsift.utility.anchor_groups import DEFAULT_GROUP_MODE
from stepsift.utility.anchor_views import DEFAULT_FOLDS, DEFAULT_GROUP_FIELD
from stepsift.utility.forward_only import DEFAULT_DIRECTIONS
from stepsift.utility.ggn_sketch import DEFAULT_LABEL_DRAWS
from stepsift.utility.less import DEFAULT_DIM as LESS_DIM
from stepsift.utility.registry import ESTIMATORS
from stepsift.utility.sketch import DEFAULT_DIM as SKETCH_DIM
from stepsift.utility.subsample import DEFAULT_EXACT_ANCHORS

# The default step is Adam continuing the warm-up's own state at the warm-up's own lr:
# the step training would really take next, so it needs no scale picked by hand.
# (SGD's default lr, DEFAULT_SGD_LR, lives with the Scorer that uses it.)
DEFAULT_OPTIMIZER = "adam"
METHODS = tuple(ESTIMATORS)
DTYPES = HF_DTYPES


@dataclass
class ScoreSettings:
    # "builtin", a folder written by --save-proxy, or a Hugging Face folder or hub id
    proxy: str = "builtin"
    # for the built-in proxy: a saved proxy folder whose weights it starts from instead of
    # random ones (a pre-trained checkpoint); it is then warmed up on the pool as usual
    proxy_init: Path | None = None
    hf: HFOptions = field(default_factory=HFOptions)  # for Hugging Face proxies
    # curvature is the default by issue 17's rule (a fast default once its selections train
    # within 1 point of exact's on the bench, 3 seeds): at 10k candidates its default 20%
    # trained to 66.9 against exact's 67.1 at a tenth of the scoring time, and every
    # curvature run audits itself against exact (benchmarks/RESULTS.md)
    method: str = "curvature"
    params: str = "all"  # which parameters the simulated step moves: all | lora | REGEX
    less_dim: int = LESS_DIM  # projection size, for --method less only
    exact_anchors: int = DEFAULT_EXACT_ANCHORS  # anchors scored, for anchor-subsample only
    forward_directions: int = DEFAULT_DIRECTIONS  # curvature directions, for forward only
    # curvature's GGN sketch through a frequent-directions buffer (bounded set-up memory)
    streamed_sketch: bool = False
    # curvature's sampled-label gradients per anchor (utility/ggn_sketch.py)
    label_draws: int = DEFAULT_LABEL_DRAWS
    # bf16 autocast for the candidates' per-sample gradients (curvature, less only; their
    # anchor state, exact and the audit stay full precision): utility/gradients.py
    grad_autocast: str = "off"
    # candidates a non-exact method also scores with exact, to measure itself on this run
    # (engine/audit.py); None: the larger of 128 and 1% of the pool; 0: no audit
    audit: int | None = None
    # optional score columns (engine/store.py): K anchor folds (0: none), the anchors'
    # group field, and the gradient sketch's size D (0: none)
    anchor_folds: int = DEFAULT_FOLDS
    anchor_group_field: str = DEFAULT_GROUP_FIELD
    # auto: the field's groups when the anchors carry it, else groups found from the proxy
    # (utility/anchor_groups.py); field: the field's only; off: no groups
    anchor_groups: str = DEFAULT_GROUP_MODE
    sketch_dim: int = SKETCH_DIM
    optimizer: str = DEFAULT_OPTIMIZER
    lr: float | None = None  # None: DEFAULT_SGD_LR for SGD, the warm-up's lr for Adam
    warmup: WarmupSettings = field(default_factory=WarmupSettings)
    batch_size: int = 16
    seed: int = 0
    image_root: Path | None = None
    skip_invalid: bool = False
    harmful_below: float = 0.0
    save_proxy: Path | None = None
    dtype: str = "float32"
    progress: bool = True
    overwrite: bool = False  # replace a finished or unfinished run made with other settings
    flush_seconds: float = 30.0  # at most this much scoring is redone after a crash
    shard: Shard | None = None  # score only this shard's batches (see engine/shards.py)
    engine: str = "local"  # "local" (this process) or "ray" (see engine/ray_engine.py)
    ray_address: str | None = None  # an existing Ray cluster; None starts a local one
    workers: int = 2  # Ray actors, each holding a proxy
    # torch threads for this process (None: the CPUs it may run on); each Ray actor takes
    # its cpus_per_worker (engine/threads.py)
    threads: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
