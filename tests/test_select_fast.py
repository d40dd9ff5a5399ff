"""`select`'s fast path (the score file vouches for the exact JSONL bytes) writes exactly
what the full, re-validating path writes; any change to the file sends it the full way."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli

from stepsift.bench.generate import write_text_chat
from stepsift.bench.pools import make_clean, make_pool
from stepsift.data import write_records
from stepsift.engine.store import DIGEST_KEY
from stepsift.select import fast, topk
from stepsift.select.harmful import Policy
from stepsift.select.keep import parse_keep

FAST = [
    "--warmup-min-samples", "8", "--warmup-min-steps", "3", "--batch-size", "8",
    "--quiet", "--seed", "0", "--skip-invalid",
]  # fmt: skip


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A JSONL pool with a BOM, CRLF line ends, a blank line, a record without an id and
    one invalid record, scored with --skip-invalid."""
    d = tmp_path_factory.mktemp("fast")
    write_text_chat(make_pool(24, seed=0), d / "clean.jsonl")
    write_text_chat(make_clean(6, "dev", "anchor", seed=0), d / "anchors.jsonl")
    lines = (d / "clean.jsonl").read_text().splitlines()
    no_id = json.loads(lines[3])
    del no_id["id"]
    lines[3] = json.dumps(no_id)
    lines.insert(5, '{"messages": [{"role": "user", "content": "no reply"}]}')  # invalid
    lines.insert(7, "")
    pool = d / "pool.jsonl"
    pool.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    out = d / "scores.parquet"
    run = run_cli("score", pool, "--anchors", d / "anchors.jsonl", "--out", out, *FAST)
    assert run.rc == 0, run.err
    return pool, out


def full_path(pool, scores, out, **kw):
    plan = topk.plan_selection(pool, scores, kw.pop("keep"), skip_invalid=True, **kw)
    write_records(plan.records, out, container=plan.container)
    return plan.selection


@pytest.mark.parametrize(
    "keep, order, drop", [("20%", "input", False), ("50%", "utility", True), ("7", "input", True)]
)
def test_fast_path_writes_what_the_full_path_writes(scored, tmp_path, keep, order, drop):
    pool, scores = scored
    assert pq.read_schema(scores).metadata[b"stepsift"].decode().count(DIGEST_KEY) == 1
    got = fast.fast_select(pool, scores, parse_keep(keep), tmp_path / "fast.jsonl",
                           drop_harmful=drop, order=order, skip_invalid=True)  # fmt: skip
    assert got is not None  # it really took the fast path
    want = full_path(pool, scores, tmp_path / "full.jsonl", keep=keep, order=order,
                     drop_harmful=drop)  # fmt: skip
    assert got == want
    assert (tmp_path / "fast.jsonl").read_bytes() == (tmp_path / "full.jsonl").read_bytes()


def test_select_uses_the_fast_path_and_changed_bytes_take_the_full_one(
    scored, tmp_path, monkeypatch
):
    pool, scores = scored
    calls = []
    real = topk.plan_selection
    monkeypatch.setattr(topk, "plan_selection", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert run_cli("select", pool, "--scores", scores, "--keep", "20%", "--skip-invalid",
                   "--out", tmp_path / "a.jsonl").rc == 0  # fmt: skip
    assert calls == []
    edited = tmp_path / "pool.jsonl"  # same records, one byte more: no longer vouched for
    edited.write_bytes(pool.read_bytes() + b"\r\n")
    keep = parse_keep("20%")
    assert fast.fast_select(edited, scores, keep, tmp_path / "x", skip_invalid=True) is None
    # the file has a record scoring rejected: without --skip-invalid, the full path refuses
    assert fast.fast_select(pool, scores, keep, tmp_path / "x") is None
    refused = run_cli("select", pool, "--scores", scores, "--keep", "20%", "--out", tmp_path / "y")
    assert refused.rc == 2 and f"{pool}:" in refused.err and not (tmp_path / "y").exists()
    calls.clear()
    run = run_cli("select", edited, "--scores", scores, "--keep", "20%", "--skip-invalid",
                  "--out", tmp_path / "b.jsonl")  # fmt: skip
    assert run.rc == 0 and calls == [1]
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


@pytest.mark.parametrize(
    "keep, order, drop, policy",
    [
        ("auto", "input", False, Policy()),
        ("300-tokens", "utility", True, Policy(harmful="threshold")),
        ("50%", "utility", False, Policy(diverse=True)),
        ("auto", "input", True, Policy(diverse=True, correction="bh")),
    ],
)
def test_fast_path_agrees_with_budgets_diverse_and_calibrated_flags(
    scored, tmp_path, keep, order, drop, policy
):
    """Issue 7's options on a real score file (with whatever optional columns `score`
    wrote): the fast path still writes what the full path writes."""
    pool, scores = scored
    columns = pq.read_schema(scores).names
    if policy.diverse and "sketch" not in columns:
        pytest.skip("this score file has no sketch column")
    got = fast.fast_select(pool, scores, parse_keep(keep), tmp_path / "fast.jsonl",
                           drop, order, True, policy)  # fmt: skip
    assert got is not None
    plan = topk.plan_selection(pool, scores, keep, drop, True, order, None, policy)
    write_records(plan.records, tmp_path / "full.jsonl", container=plan.container)
    assert got == plan.selection and got.kept_ids
    assert (tmp_path / "fast.jsonl").read_bytes() == (tmp_path / "full.jsonl").read_bytes()
