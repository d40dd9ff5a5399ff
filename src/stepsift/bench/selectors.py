"""Baseline data selectors for the benchmark: each picks a subset of the same candidate pool.

Every selector returns a `SelectionResult`: the kept ids (best first where the selector ranks,
else in pool order), the target size floor(fraction * n), a note saying why fewer were kept when
that happens (never silently padded), and `select_seconds`, the selector's own measured cost.

    full             everything
    random           a uniform random subset (seeded)
    ost              top by one-step utility (the score table of `stepsift score`)
    ost_drop_harmful the same, never keeping a sample scored harmful
    ost_auto         top by utility, as many as `select --keep auto` keeps (select/budget.py)
    ost_diverse      the set-wise greedy of `select --diverse` at a keep fraction
    high_loss        highest proxy loss first ("hard examples")
    loss_filter      lowest proxy loss first (the plain filter a user writes in five minutes)
    less             top by LESS's cosine to the anchors' gradients (`score --method less`)
    ifd              Instruction-Following Difficulty (Li et al. 2024) on the proxy
    deita            a DEITA-like score-then-diversity filter (Liu et al. 2024) on the proxy

    ORACLES (read the hidden ground truth; bounds, NOT methods):
    oracle_clean     a seeded random subset of the samples that are not wrong
    oracle_clean_all every sample that is not wrong
    oracle_target    every not-wrong sample of the target families

Selectors see only what a user's pipeline would: the records' turns and images, a score table
and the proxy. None of them reads `Record.metadata` (the benchmark hides the ground truth there)
-- EXCEPT THE ORACLES (`ORACLES`), which read `metadata["meta"]["noise"]` (and "family") on
purpose: they say how much selection could gain at best with perfect knowledge of which
samples are wrong, so a method's result can be read against them. They are not selection
methods and must never be presented as one.
The score-table selectors' `select_seconds` covers the selection only; the table's own cost is
the `score` run's. `ifd` and `deita` time their proxy forward passes, which are their real cost.

A judge selector (built with the benchmark's target model, elsewhere) fits the same interface:
it receives the pool records (turns and images; no metadata), the keep fraction, and a judge
callable mapping a batch of records to one float each (the target model's rating of the answer,
higher is better); it keeps the top floor(fraction * n) by rating, ties broken by id through
`select.keep.rank`, and returns a `SelectionResult` whose `select_seconds` includes the judging.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

from stepsift.bench.metrics import NOT_WRONG
from stepsift.data.record import Record, Turn
from stepsift.engine.store import read_scores
from stepsift.proxy.base import Proxy
from stepsift.proxy.byte_tokenizer import PAD
from stepsift.select.decide import choose, decide
from stepsift.select.harmful import Policy
from stepsift.select.keep import Keep, rank
from stepsift.select.score_data import score_columns, score_data


@dataclass
class SelectionResult:
    """What a selector kept, and what it cost."""

    name: str
    kept_ids: list[str]
    n_pool: int
    n_target: int
    select_seconds: float
    note: str = ""  # why fewer than n_target were kept, or other caveats; "" when none
    scores: dict[str, float] | None = None  # the selector's per-record score, where it has one

    @property
    def n_kept(self) -> int:
        return len(self.kept_ids)


def _target(n: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {fraction}")
    return Keep(fraction=fraction).size(n)


# --- selectors without a model ------------------------------------------------------------


def full(records: Sequence[Record]) -> SelectionResult:
    """Every record: the no-selection baseline."""
    start = time.perf_counter()
    ids = [r.id for r in records]
    return SelectionResult("full", ids, len(ids), len(ids), time.perf_counter() - start)


def random_k(records: Sequence[Record], fraction: float, seed: int = 0) -> SelectionResult:
    """floor(fraction * n) records drawn uniformly without replacement, kept in pool order."""
    start = time.perf_counter()
    n_target = _target(len(records), fraction)
    picked = np.sort(np.random.default_rng(seed).choice(len(records), n_target, replace=False))
    ids = [records[i].id for i in picked]
    return SelectionResult("random", ids, len(records), n_target, time.perf_counter() - start)


# --- selectors on a score table -----------------------------------------------------------


def _table(scores: pa.Table | str | Path) -> pa.Table:
    return scores if isinstance(scores, pa.Table) else read_scores(Path(scores))


def _column(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        raise ValueError(f"score table lacks column {name!r}")
    return table.column(name).to_numpy(zero_copy_only=False)


def _ost(name: str, scores: pa.Table | str | Path, fraction: float, drop: bool) -> SelectionResult:
    start = time.perf_counter()
    ids, utility, harmful = score_columns(_table(scores))  # the same reading as `select`
    sel = choose(ids, utility, harmful, Keep(fraction=fraction), drop_harmful=drop)
    note = ""
    if sel.n_dropped_harmful:
        note = f"{sel.n_dropped_harmful} harmful sample(s) in the top {sel.n_target} left out"
    return SelectionResult(
        name, sel.kept_ids, len(ids), sel.n_target, time.perf_counter() - start, note
    )


def ost_top_k(scores: pa.Table | str | Path, fraction: float) -> SelectionResult:
    """The top floor(fraction * n) by one-step utility (ties by id), as `stepsift select`."""
    return _ost("ost", scores, fraction, drop=False)


def _decided(
    name: str, scores: pa.Table | str | Path, keep: Keep, note_prefix: str,
    policy: Policy | None = None,
) -> SelectionResult:  # fmt: skip
    """`select`'s own decision (`decide`) on a score table; `note` is its line that starts
    with `note_prefix`."""
    start = time.perf_counter()
    sel = decide(score_data(_table(scores), "scores"), keep, policy=policy)
    note = next((line for line in sel.notes if line.startswith(note_prefix)), "")
    return SelectionResult(
        name, sel.kept_ids, sel.n_candidates, sel.n_target, time.perf_counter() - start, note
    )


def stepsift_default(scores: pa.Table | str | Path, fraction: float) -> SelectionResult:
    """What `stepsift select --keep F` does with every default: with per-group utilities in
    the score file, the budget filled by anchor group (select/coverage.py); else top-k."""
    return _decided("stepsift", scores, Keep(fraction=fraction), "coverage")


def ost_drop_harmful(scores: pa.Table | str | Path, fraction: float) -> SelectionResult:
    """The top by utility with harmful ones removed; fewer are kept when the top holds any."""
    return _ost("ost_drop_harmful", scores, fraction, drop=True)


def ost_auto(scores: pa.Table | str | Path) -> SelectionResult:
    """The top by utility, cut where `select --keep auto` cuts (the knee of cumulative utility
    against tokens over the positive-utility candidates); the cut is in `note`."""
    return _decided("ost_auto", scores, Keep(auto=True), "auto budget")


def ost_diverse(scores: pa.Table | str | Path, fraction: float) -> SelectionResult:
    """`select --diverse` at floor(fraction * n): redundancy-aware greedy on the score
    table's gradient sketches (select/diverse.py), the same budget as `ost` top-k."""
    return _decided("ost_diverse", scores, Keep(fraction=fraction), "diverse",
                    Policy(diverse=True))  # fmt: skip


def _by_column(
    name: str, scores: pa.Table | str | Path, column: str, fraction: float, highest: bool
) -> SelectionResult:
    """The top floor(fraction * n) by one score-table column, highest or lowest first; ties
    by id, a NaN ranks last either way."""
    start = time.perf_counter()
    table = _table(scores)
    ids = [str(x) for x in _column(table, "id")]
    value = _column(table, column).astype(np.float64)
    # `rank` puts the highest first and NaN last; negating keeps NaN a NaN
    key = value if highest else -value
    sel = choose(ids, key, np.zeros(len(ids), dtype=bool), Keep(fraction=fraction))
    scores_out = dict(zip(ids, value.tolist(), strict=True))
    elapsed = time.perf_counter() - start
    return SelectionResult(name, sel.kept_ids, len(ids), sel.n_target, elapsed, "", scores_out)


def high_loss(scores: pa.Table | str | Path, fraction: float) -> SelectionResult:
    """The samples with the HIGHEST proxy loss (the classic "hard examples" filter).

    Uses the score table's `loss` column (the proxy's mean answer-token loss, a by-product of
    scoring). `loss_filter` is the other direction. Ties go by id; a NaN loss ranks last.
    """
    return _by_column("high_loss", scores, "loss", fraction, highest=True)


def loss_filter(scores: pa.Table | str | Path, fraction: float) -> SelectionResult:
    """The samples with the LOWEST proxy loss: the plain "drop what the model finds
    implausible" filter a user writes in five minutes.

    The score table's `loss` column, lowest first; ties by id, a NaN loss ranks last (never
    kept before a defined one). `scores` holds each sample's loss.
    """
    return _by_column("loss_filter", scores, "loss", fraction, highest=False)


def _table_method(table: pa.Table) -> str | None:
    """The estimator a score table says it was made with (its "stepsift" metadata), if any."""
    raw = (table.schema.metadata or {}).get(b"stepsift")
    if not raw:
        return None
    try:
        return json.loads(raw).get("method")
    except (ValueError, AttributeError):
        return None


def less(scores: pa.Table | str | Path, fraction: float) -> SelectionResult:
    """LESS (Xia et al. 2024): the top floor(fraction * n) by the `utility` column of a score
    table made by `stepsift score --method less` (each candidate's mean cosine between its
    projected update and the anchors' projected gradients; utility/less.py). Ties by id, NaN
    last. A table whose metadata names another estimator is refused."""
    start = time.perf_counter()
    table = _table(scores)
    method = _table_method(table)
    if method is not None and method != "less":
        raise ValueError(f"selector 'less' needs a `score --method less` table, got {method!r}")
    result = _by_column("less", table, "utility", fraction, highest=True)
    result.select_seconds = time.perf_counter() - start
    return result


# --- oracles: THE ONLY SELECTORS THAT READ THE HIDDEN METADATA ------------------------------


def _meta(record: Record) -> dict:
    meta = record.metadata.get("meta") if isinstance(record.metadata, dict) else None
    if not isinstance(meta, dict) or "noise" not in meta:
        raise ValueError(
            f"record {record.id!r}: oracle selectors need the benchmark's hidden "
            'metadata["meta"]["noise"]'
        )
    return meta


def _not_wrong(records: Sequence[Record]) -> list[int]:
    return [i for i, r in enumerate(records) if _meta(r)["noise"] in NOT_WRONG]


def oracle_clean(records: Sequence[Record], fraction: float, seed: int = 0) -> SelectionResult:
    """ORACLE (reads the hidden noise tags; a bound, not a method): floor(fraction * n) records
    drawn uniformly (seeded) from those that are not wrong (clean or near-duplicate), kept in
    pool order. Random selection with the noise removed: what perfect filtering gives at this
    budget. When fewer are not wrong, all of them are kept and `note` says so."""
    start = time.perf_counter()
    n_target = _target(len(records), fraction)
    eligible = _not_wrong(records)
    k = min(n_target, len(eligible))
    picked = np.sort(np.random.default_rng(seed).choice(len(eligible), k, replace=False))
    ids = [records[eligible[i]].id for i in picked]
    note = ""
    if k < n_target:
        note = f"only {len(eligible)} of {len(records)} not wrong, for a target of {n_target}"
    elapsed = time.perf_counter() - start
    return SelectionResult("oracle_clean", ids, len(records), n_target, elapsed, note)


def oracle_clean_all(records: Sequence[Record]) -> SelectionResult:
    """ORACLE (reads the hidden noise tags; a bound, not a method): every record that is not
    wrong (clean or near-duplicate), in pool order: full-SFT with the noise removed."""
    start = time.perf_counter()
    ids = [records[i].id for i in _not_wrong(records)]
    elapsed = time.perf_counter() - start
    return SelectionResult("oracle_clean_all", ids, len(records), len(ids), elapsed)


def oracle_target(
    records: Sequence[Record], target_families: Sequence[str] = ("chain",)
) -> SelectionResult:
    """ORACLE (reads the hidden noise tags and problem families; a bound, not a method): every
    record that is not wrong and whose `metadata["meta"]["family"]` is one of
    `target_families` (a record without a family counts as "chain"), in pool order."""
    if not target_families:
        raise ValueError("oracle_target needs at least one target family")
    start = time.perf_counter()
    wanted = set(target_families)
    clean = _not_wrong(records)
    kept = [i for i in clean if _meta(records[i]).get("family", "chain") in wanted]
    ids = [records[i].id for i in kept]
    note = (
        f"{len(ids)} of {len(clean)} not-wrong samples are in the target "
        f"famil{'y' if len(wanted) == 1 else 'ies'} {', '.join(sorted(wanted))}"
    )
    elapsed = time.perf_counter() - start
    return SelectionResult("oracle_target", ids, len(records), len(ids), elapsed, note)


ORACLES = ("oracle_clean", "oracle_clean_all", "oracle_target")


# --- proxy forward passes -----------------------------------------------------------------


@dataclass
class _Forward:
    loss: np.ndarray  # (n,) mean loss over supervised tokens
    tokens: np.ndarray  # (n,) supervised tokens inside the proxy's window
    embedding: np.ndarray | None  # (n, d) mean-pooled final hidden states, when asked for


def _forward(
    proxy: Proxy, records: Sequence[Record], batch_size: int, embed: bool = False
) -> _Forward:
    """Per-record losses (model's own weights, no grad) and optionally embeddings, in batches."""
    captured: dict[str, torch.Tensor] = {}
    hook = None
    if embed:
        final_norm = getattr(proxy.model, "ln_f", None)
        if final_norm is None:
            raise ValueError(
                "proxy embeddings need the built-in proxy (a model with a final `ln_f`); "
                "use embedding='tfidf' for other proxies"
            )
        # the final norm's output is the trunk's last hidden state, text positions only
        hook = final_norm.register_forward_hook(lambda m, i, out: captured.update(h=out))
    losses, tokens, embeddings = [], [], []
    try:
        with torch.no_grad():
            for start in range(0, len(records), batch_size):
                batch = proxy.collate(records[start : start + batch_size])
                losses.append(proxy.per_sample_loss({}, batch.tensors).double().cpu().numpy())
                tokens.append(batch.tokens.cpu().numpy())
                if embed:
                    h = captured.pop("h")
                    real = (batch.tensors["input_ids"] != PAD).unsqueeze(-1).to(h.dtype)
                    pooled = (h * real).sum(dim=1) / real.sum(dim=1).clamp(min=1.0)
                    embeddings.append(pooled.double().cpu().numpy())
    finally:
        if hook is not None:
            hook.remove()
    if not records:
        return _Forward(
            np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros((0, 0)) if embed else None
        )
    return _Forward(
        np.concatenate(losses),
        np.concatenate(tokens),
        np.concatenate(embeddings) if embed else None,
    )


def proxy_embeddings(proxy: Proxy, records: Sequence[Record], batch_size: int = 16) -> np.ndarray:
    """(n, d_model) mean over non-pad text positions of the built-in proxy's final hidden state.

    Taken by a forward hook on the model's final LayerNorm; the text states attend to the image
    tokens, so the image is in the embedding too. The proxy itself is left untouched.
    """
    emb = _forward(proxy, records, batch_size, embed=True).embedding
    assert emb is not None
    return emb


def answer_only(record: Record, keep_image: bool = False) -> Record:
    """The record with its user turns removed (system and assistant turns stay)."""
    turns = tuple(t for t in record.turns if t.role != "user")
    return replace(record, turns=turns, images=record.images if keep_image else ())


def question_supervised(record: Record) -> Record:
    """The record with the loss moved onto the user turns (assistant turns become context)."""
    turns = tuple(Turn(t.role, t.text, supervised=t.role == "user") for t in record.turns)
    return replace(record, turns=turns)


def _ranked_valid(ids: list[str], score: np.ndarray, valid: np.ndarray, k: int) -> list[int]:
    """Indices of up to k valid records by score, highest first, ties by id."""
    order = rank(ids, np.where(valid, score, -np.inf))
    return [int(i) for i in order if valid[i]][:k]


# --- IFD ----------------------------------------------------------------------------------


def ifd_scores(
    proxy: Proxy, records: Sequence[Record], batch_size: int = 16, keep_image: bool = False
) -> np.ndarray:
    """IFD = loss(answer | question) / loss(answer alone) per record; NaN where undefined.

    Undefined: no answer token inside the proxy's window in either rendering, or a zero
    answer-alone loss.
    """
    conditioned = _forward(proxy, records, batch_size)
    alone = _forward(proxy, [answer_only(r, keep_image) for r in records], batch_size)
    ok = (conditioned.tokens > 0) & (alone.tokens > 0) & (alone.loss > 0)
    out = np.full(len(records), np.nan)
    out[ok] = conditioned.loss[ok] / alone.loss[ok]
    return out


def ifd(
    proxy: Proxy,
    records: Sequence[Record],
    fraction: float,
    batch_size: int = 16,
    keep_image: bool = False,
) -> SelectionResult:
    """Instruction-Following Difficulty (Li et al. 2024, "From Quantity to Quality") on the proxy.

    IFD = s(A | Q) / s(A), s the mean answer-token loss: how little the instruction helps the
    model produce the answer. Kept: the highest IFD, excluding IFD > 1 as the paper does (there
    the instruction makes the answer *less* likely: question and answer do not match). When too
    few remain the result is smaller than the target and `note` says how many were excluded.

    s(A) drops the user turns *and*, by default, the image: in a VLM sample the instruction is
    the image plus the question, and the paper's s(A) conditions on nothing. `keep_image=True`
    gives the "question text only" variant. Pass the same warmed-up proxy OST scored with (the
    paper likewise scores with a briefly fine-tuned "pre-experienced" model).
    """
    start = time.perf_counter()
    ids = [r.id for r in records]
    n_target = _target(len(ids), fraction)
    score = ifd_scores(proxy, records, batch_size, keep_image)
    undefined = np.isnan(score)
    above = ~undefined & (score > 1.0)
    valid = ~undefined & ~above
    kept = _ranked_valid(ids, score, valid, n_target)
    note = ""
    if len(kept) < n_target:
        note = (
            f"only {int(valid.sum())} of {len(ids)} eligible for a target of {n_target}: "
            f"{int(above.sum())} with IFD > 1 and {int(undefined.sum())} undefined "
            "(no answer token in the proxy's window) excluded"
        )
    scores_out = dict(zip(ids, score.tolist(), strict=True))
    elapsed = time.perf_counter() - start
    return SelectionResult(
        "ifd", [ids[i] for i in kept], len(ids), n_target, elapsed, note, scores_out
    )


# --- DEITA-like ---------------------------------------------------------------------------


def tfidf_embeddings(records: Sequence[Record]) -> Any:
    """L2-normalised TF-IDF (a scipy CSR matrix) of hashed character 3-5-grams of each record's
    whole text; the IDF is fitted on the pool itself."""
    texts = ["\n".join(f"{t.role}: {t.text}" for t in r.turns) for r in records]
    hashed = HashingVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), n_features=2**18, alternate_sign=False, norm=None
    ).transform(texts)
    return TfidfTransformer(sublinear_tf=True).fit_transform(hashed).tocsr()


def _unit(emb: np.ndarray) -> np.ndarray:
    # centring removes the direction every hidden state shares (transformer states are
    # anisotropic: raw cosines all sit near 1), so a similarity threshold separates samples
    centred = emb - emb.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norm, 1e-12)


def _cosines(a: Any, b: Any) -> np.ndarray:
    """Dense (len(a), len(b)) dot products of unit rows, dense or sparse."""
    prod = a @ b.T
    return prod.toarray() if hasattr(prod, "toarray") else np.asarray(prod)


def diverse_greedy(
    order: Sequence[int], emb: Any, k: int, threshold: float | None, block: int = 1024
) -> list[int]:
    """Walk `order`, keeping a row unless its cosine to an already kept row is >= threshold.

    Blocked: each block of candidates is compared to everything kept so far in one product,
    then within itself, so the cost is O(n * k) similarities in matrix form, not a Python loop
    over pairs. `threshold=None` turns the filter off (the first k of `order`).
    """
    order = list(order)
    if threshold is None:
        return order[:k]
    kept: list[int] = []
    for start in range(0, len(order), block):
        if len(kept) >= k:
            break
        idx = order[start : start + block]
        alive = np.ones(len(idx), dtype=bool)
        if kept:
            alive &= _cosines(emb[idx], emb[kept]).max(axis=1) < threshold
        within = _cosines(emb[idx], emb[idx])
        for j in range(len(idx)):
            if not alive[j]:
                continue
            kept.append(idx[j])
            if len(kept) >= k:
                break
            alive[j + 1 :] &= within[j, j + 1 :] < threshold
    return kept


def deita_like(
    proxy: Proxy,
    records: Sequence[Record],
    fraction: float,
    threshold: float | None = 0.9,
    embedding: str = "proxy",
    batch_size: int = 16,
    block: int = 1024,
) -> SelectionResult:
    """A DEITA-like selector (Liu et al. 2024, "What Makes Good Data for Alignment?"), on the proxy.

    DEITA rates each sample's complexity and quality with trained LLM scorers, ranks by their
    product, and walks that ranking keeping a sample only if its embedding's cosine similarity
    to every sample kept so far is below a threshold. This analogue keeps the procedure and
    swaps the scorers for cheap proxy signals (no hidden metadata, no rule for the benchmark's
    noise types):

    - complexity: the proxy's mean loss on the question (user) tokens: how much the
      instruction surprises a model that has seen the pool's distribution;
    - quality: exp(-answer loss | question, image), the answer's geometric-mean token
      probability: how well-formed and plausible the reply is to the proxy;
    - embedding: "proxy" (mean-pooled final hidden states, centred) or "tfidf" (hashed
      character n-gram TF-IDF of the whole conversation);
    - threshold: cosine similarity at or above which a candidate is skipped; None turns
      the diversity filter off.

    Records with no answer token in the proxy's window have no quality and are excluded. When
    the filter leaves fewer than the target, fewer are kept and `note` says so.
    """
    if embedding not in ("proxy", "tfidf"):
        raise ValueError(f"unknown embedding {embedding!r}; choose 'proxy' or 'tfidf'")
    start = time.perf_counter()
    ids = [r.id for r in records]
    n_target = _target(len(ids), fraction)
    answer = _forward(proxy, records, batch_size, embed=embedding == "proxy")
    question = _forward(proxy, [question_supervised(r) for r in records], batch_size)
    score = question.loss * np.exp(-answer.loss)
    valid = answer.tokens > 0
    order = _ranked_valid(ids, score, valid, len(ids))
    if embedding == "proxy":
        assert answer.embedding is not None
        emb: Any = _unit(answer.embedding)
    else:
        emb = tfidf_embeddings(records)
    kept = diverse_greedy(order, emb, n_target, threshold, block)
    notes = []
    if (~valid).any():
        notes.append(f"{int((~valid).sum())} without an answer token in the proxy's window")
    if len(kept) < n_target:
        notes.append(
            f"kept {len(kept)} of a target of {n_target}: the diversity filter "
            f"(cosine >= {threshold}) skipped {len(order) - len(kept)} of {len(order)} ranked"
        )
    scores_out = dict(zip(ids, np.where(valid, score, np.nan).tolist(), strict=True))
    elapsed = time.perf_counter() - start
    return SelectionResult(
        "deita", [ids[i] for i in kept], len(ids), n_target, elapsed, "; ".join(notes), scores_out
    )


# --- registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectorInputs:
    """Everything a selector may draw on; each selector says which parts it needs."""

    records: Sequence[Record]
    scores: pa.Table | None = None  # a `stepsift score` table (see engine/store.py)
    proxy: Proxy | None = None  # the warmed-up proxy OST scored with
    batch_size: int = 16
    seed: int = 0
    target_families: tuple[str, ...] = ("chain",)  # what the test set asks (oracle_target)
    less_scores: pa.Table | None = None  # a `stepsift score --method less` table


@dataclass(frozen=True)
class Selector:
    name: str
    description: str
    needs: tuple[str, ...]  # fields of SelectorInputs that must not be None
    run: Callable[..., SelectionResult]

    def __call__(self, inputs: SelectorInputs, fraction: float, **options: Any) -> SelectionResult:
        """Run on `inputs`; `options` go to the selector function (e.g. threshold=0.95)."""
        missing = [n for n in self.needs if getattr(inputs, n) is None]
        if missing:
            raise ValueError(f"selector {self.name!r} needs {', '.join(missing)}")
        return self.run(inputs, fraction, **options)


def _registry(*selectors: Selector) -> dict[str, Selector]:
    return {s.name: s for s in selectors}


SELECTORS: dict[str, Selector] = _registry(
    Selector("full", "every candidate (no selection)", (), lambda x, f, **o: full(x.records)),
    Selector(
        "random",
        "uniform random subset, seeded",
        (),
        lambda x, f, **o: random_k(x.records, f, o.get("seed", x.seed)),
    ),
    Selector(
        "ost",
        "top by one-step utility",
        ("scores",),
        lambda x, f, **o: ost_top_k(x.scores, f),
    ),
    Selector(
        "stepsift",
        "stepsift's default selection (`select --keep F`: coverage of the anchor groups)",
        ("scores",),
        lambda x, f, **o: stepsift_default(x.scores, f),
    ),
    Selector(
        "ost_drop_harmful",
        "top by one-step utility, never a harmful one",
        ("scores",),
        lambda x, f, **o: ost_drop_harmful(x.scores, f),
    ),
    Selector(
        "ost_auto",
        "top by one-step utility, the automatic budget of `select --keep auto`",
        ("scores",),
        lambda x, f, **o: ost_auto(x.scores),
    ),
    Selector(
        "ost_diverse",
        "set-wise greedy of `select --diverse` (redundancy paid for) at a keep fraction",
        ("scores",),
        lambda x, f, **o: ost_diverse(x.scores, f),
    ),
    Selector(
        "high_loss",
        "highest proxy loss first (hard examples)",
        ("scores",),
        lambda x, f, **o: high_loss(x.scores, f),
    ),
    Selector(
        "loss_filter",
        "lowest proxy loss first (the five-minute filter)",
        ("scores",),
        lambda x, f, **o: loss_filter(x.scores, f),
    ),
    Selector(
        "less",
        "LESS: top by cosine of projected gradients to the anchors' (`score --method less`)",
        ("less_scores",),
        lambda x, f, **o: less(x.less_scores, f),
    ),
    Selector(
        "oracle_clean",
        "ORACLE (reads hidden noise tags): random subset of the not-wrong samples, seeded",
        (),
        lambda x, f, **o: oracle_clean(x.records, f, o.get("seed", x.seed)),
    ),
    Selector(
        "oracle_clean_all",
        "ORACLE (reads hidden noise tags): every not-wrong sample",
        (),
        lambda x, f, **o: oracle_clean_all(x.records),
    ),
    Selector(
        "oracle_target",
        "ORACLE (reads hidden noise tags and families): every not-wrong target-family sample",
        (),
        lambda x, f, **o: oracle_target(x.records, x.target_families),
    ),
    Selector(
        "ifd",
        "Instruction-Following Difficulty on the proxy, IFD > 1 excluded",
        ("proxy",),
        lambda x, f, **o: ifd(x.proxy, x.records, f, o.pop("batch_size", x.batch_size), **o),
    ),
    Selector(
        "deita",
        "DEITA-like: proxy complexity x quality, cosine diversity filter",
        ("proxy",),
        lambda x, f, **o: deita_like(
            x.proxy, x.records, f, batch_size=o.pop("batch_size", x.batch_size), **o
        ),
    ),
)

__all__ = [
    "ORACLES",
    "SELECTORS",
    "SelectionResult",
    "Selector",
    "SelectorInputs",
    "answer_only",
    "deita_like",
    "diverse_greedy",
    "full",
    "high_loss",
    "ifd",
    "ifd_scores",
    "less",
    "loss_filter",
    "oracle_clean",
    "oracle_clean_all",
    "oracle_target",
    "ost_auto",
    "ost_diverse",
    "ost_drop_harmful",
    "ost_top_k",
    "stepsift_default",
    "proxy_embeddings",
    "question_supervised",
    "random_k",
    "tfidf_embeddings",
]
