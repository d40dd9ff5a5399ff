"""Generator v2: task families, the family mix, systematic errors, and what the judge and the
evaluation read of them."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from stepsift.bench import judge as judge_mod
from stepsift.bench import trainer
from stepsift.bench.digits import load_bank
from stepsift.bench.families import FAMILIES, FAMILY_NAMES, extract_boxed, is_correct, parse_answer
from stepsift.bench.family_mix import FamilyMix, apportion
from stepsift.bench.generate import to_llava, write_benchmark
from stepsift.bench.noise_kinds import (
    ALL_NOISE_TYPES,
    DEFAULT_V2_NOISE_MIX,
    SYSTEMATIC_TYPES,
    systematic_rules,
)
from stepsift.bench.pools import make_clean, make_pool
from stepsift.bench.problems import (
    CONFUSIONS,
    NOISE_TYPES,
    TEMPLATE_BY_NAME,
    extract_answer,
    last_computed_value,
    stated_digits,
)
from stepsift.data import read_records

SEED = 11
N = 3000


@pytest.fixture(scope="module")
def pool():
    return make_pool(N, noise_rate=0.4, seed=SEED, families=FamilyMix())


@pytest.fixture(scope="module")
def chain_pool():
    """Chain only (the old regime's families), every noise type of the v2 mix."""
    return make_pool(2000, noise_rate=0.5, seed=4, families=FamilyMix(target_share=1.0))


def _of(pool, noise: str, family: str | None = None) -> list:
    return [
        s
        for s in pool
        if s.meta["noise"] == noise and (family is None or s.meta["family"] == family)
    ]


def _parse(s) -> int | None:
    return parse_answer(s.answer, s.meta["family"])


# --- clean problems ------------------------------------------------------------------------------


def test_every_family_clean_reply_parses_to_its_answer() -> None:
    samples = make_clean(1400, "test", "t", seed=2, families={f: 1.0 for f in FAMILY_NAMES})
    counts = Counter(s.meta["family"] for s in samples)
    assert counts == {f: 200 for f in FAMILY_NAMES}  # exact shares
    bank = load_bank()
    for s in samples:
        meta = s.meta
        assert type(meta["answer"]) is int
        assert meta["noise"] == "clean" and meta["systematic"] is False
        assert _parse(s) == meta["answer"] and is_correct(s.answer, meta)
        assert bank.labels[meta["image_indices"]].tolist() == meta["digits"]
        fam = meta["family"]
        if fam in ("chain", "answer_only"):
            assert meta["task"] in TEMPLATE_BY_NAME
        else:
            assert meta["task"] == ("sum" if fam == "boxed" else fam)
        assert s.has_image == (fam != "text_arith")
        if fam in ("chain", "transcribe", "count", "compare", "boxed"):
            assert stated_digits(s.answer) == meta["digits"]
    by = {f: [s for s in samples if s.meta["family"] == f] for f in FAMILY_NAMES}
    assert {s.meta["task"] for s in by["chain"]} == set(TEMPLATE_BY_NAME)
    assert {s.meta["task"] for s in by["answer_only"]} == set(TEMPLATE_BY_NAME)
    for s in by["answer_only"]:
        assert re.fullmatch(r"Answer: -?\d+", s.answer)
        assert s.question == TEMPLATE_BY_NAME[s.meta["task"]].question
    for s in by["transcribe"]:
        d = s.meta["digits"]
        assert s.answer.endswith("Answer: " + "".join(map(str, d)))
        assert s.meta["answer"] == int("".join(map(str, d)))
    assert any(s.meta["digits"][0] == 0 for s in by["transcribe"])  # leading zeros occur
    for s in by["count"]:
        n = len(s.meta["digits"])
        assert f"That is {n} digits." in s.answer and s.meta["answer"] == n
    for s in by["compare"]:
        a, b = s.meta["digits"]
        assert a != b and s.meta["answer"] == int(a > b)
        assert f"{a} is {'larger' if a > b else 'smaller'} than {b}." in s.answer
    for s in by["text_arith"]:
        assert s.meta["digits"] == [] and s.meta["image_indices"] == []
        v, op = s.meta["operands"], s.meta["op"]
        expr = f" {op} ".join(map(str, v))
        assert s.question == f"What is {expr}?"
        assert s.answer == f"{expr} = {s.meta['answer']}.\nAnswer: {s.meta['answer']}"
        assert s.meta["answer"] == eval(expr)  # single digits and + - * only
    assert {s.meta["op"] for s in by["text_arith"]} == {"+", "-", "*"}
    for s in by["boxed"]:
        assert s.answer.splitlines()[-1] == f"\\boxed{{{s.meta['answer']}}}"
        assert extract_answer(s.answer) is None  # another answer format
        assert "\\boxed{N}" in s.question


def test_make_clean_chain_only_is_unchanged() -> None:
    """families=None: the old anchors/test/judge problems, byte for byte (digest taken from
    the generator before v2); also guards the old pool."""
    samples = (
        make_pool(150, 0.4, None, 2)
        + make_clean(30, "dev", "anchor", 2)
        + make_clean(30, "pool", "judge", 2, stream="judge")
    )
    blob = "\n".join(json.dumps(to_llava(x)) + f" {x.image_of} {x.brightness}" for x in samples)
    want = "aa090a531c9e42f8fd20362db98fd3fdf05e5a67cad36af80a240a9faea63d5e"
    assert hashlib.sha256(blob.encode()).hexdigest() == want
    assert all("family" not in s.meta for s in samples)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("3 + 4 = 7.\n\\boxed{7}", 7),
        ("\\boxed{-3}.", -3),
        ("\\boxed{7}\n\\boxed{}", None),  # only the last boxed line counts
        ("3 + 4 = 7.\nAnswer: 7", None),
        ("\\boxed{7", None),
        ("", None),
    ],
)
def test_extract_boxed(text: str, want: int | None) -> None:
    assert extract_boxed(text) == want


def test_is_correct_dispatches_on_family() -> None:
    assert is_correct("x\nAnswer: 7", {"answer": 7})  # old records: chain
    assert not is_correct("x\n\\boxed{7}", {"answer": 7})
    assert is_correct("x\n\\boxed{7}", {"answer": 7, "family": "boxed"})
    assert not is_correct("x\nAnswer: 7", {"answer": 7, "family": "boxed"})
    assert is_correct("Answer: 075", {"answer": 75, "family": "transcribe"})
    with pytest.raises(ValueError, match="unknown family"):
        is_correct("Answer: 7", {"answer": 7, "family": "poetry"})


# --- the mix -------------------------------------------------------------------------------------


def test_family_counts_match_the_target_share(pool) -> None:
    counts = Counter(s.meta["family"] for s in pool)
    assert counts["chain"] == round(N * 0.3) == 900
    assert {f: counts[f] for f in FAMILY_NAMES if f != "chain"} == {
        f: 350 for f in FAMILY_NAMES if f != "chain"
    }
    mix = FamilyMix(
        target=("chain", "boxed"), target_share=0.5, others={"transcribe": 3, "count": 1}
    )
    assert mix.counts(101) == {"chain": 25, "boxed": 25, "transcribe": 38, "count": 13}
    small = make_pool(101, noise_rate=0.3, seed=1, families=mix)
    assert Counter(s.meta["family"] for s in small) == mix.counts(101)
    assert FamilyMix(target_share=1.0).counts(77) == {"chain": 77}
    assert set(
        Counter(
            s.meta["family"]
            for s in make_pool(40, 0.3, seed=1, families=FamilyMix(target_share=1.0))
        )
    ) == {"chain"}
    assert mix.weights() == pytest.approx(
        {"chain": 0.25, "boxed": 0.25, "transcribe": 0.375, "count": 0.125}
    )
    assert mix.target_weights() == {"chain": 1.0, "boxed": 1.0}
    assert FamilyMix(**mix.to_dict()) == mix
    assert apportion({"a": 1.0, "b": 1.0, "c": 1.0}, 10) == {"a": 4, "b": 3, "c": 3}


def test_tasks_recorded(pool) -> None:
    for s in pool:
        fam = s.meta["family"]
        if fam in ("chain", "answer_only"):
            assert s.meta["task"] in TEMPLATE_BY_NAME
        elif fam == "boxed":
            assert s.meta["task"] == "sum"
        else:
            assert s.meta["task"] == fam


def test_noise_count_exact_and_tags(pool) -> None:
    counts = Counter(s.meta["noise"] for s in pool)
    assert N - counts["clean"] == round(N * 0.4)
    assert set(counts) == {"clean", *ALL_NOISE_TYPES}
    for t in ALL_NOISE_TYPES:
        assert counts[t] > 50, counts
    assert sum(counts[t] for t in SYSTEMATIC_TYPES) > 0.3 * (N - counts["clean"])
    odd = make_pool(1001, noise_rate=0.33, seed=3, families=FamilyMix())
    assert sum(s.meta["noise"] != "clean" for s in odd) == round(1001 * 0.33)
    for s in pool:
        assert s.meta["systematic"] is (s.meta["noise"] in SYSTEMATIC_TYPES)
        if s.meta["noise"] != "clean":  # every kind lands only where its family supports it
            assert s.meta["noise"] in FAMILIES[s.meta["family"]].noise_types


def test_noisy_samples_are_not_correct(pool) -> None:
    for s in pool:
        noise = s.meta["noise"]
        if noise in ("clean", "near_duplicate"):
            assert is_correct(s.answer, s.meta), s
        else:
            assert not is_correct(s.answer, s.meta), s


def test_noise_restricted_to_supporting_families() -> None:
    # sys_operator only: only chain, answer_only and text_arith can carry it; the noise count
    # still holds, carried by samples of those families
    pool = make_pool(
        600, noise_rate=0.2, noise_mix={"sys_operator": 1.0}, seed=2, families=FamilyMix()
    )
    noisy = [s for s in pool if s.meta["noise"] != "clean"]
    assert len(noisy) == 120
    assert {s.meta["family"] for s in noisy} <= {"chain", "answer_only", "text_arith"}
    with pytest.raises(ValueError, match="noisy samples requested"):
        make_pool(
            100, noise_rate=0.9, noise_mix={"sys_operator": 1.0}, seed=2, families=FamilyMix()
        )


def test_defaults() -> None:
    assert set(DEFAULT_V2_NOISE_MIX) == set(ALL_NOISE_TYPES)
    assert ALL_NOISE_TYPES == (*NOISE_TYPES, *SYSTEMATIC_TYPES)
    assert sum(DEFAULT_V2_NOISE_MIX[t] for t in SYSTEMATIC_TYPES) == sum(
        DEFAULT_V2_NOISE_MIX[t] for t in NOISE_TYPES
    )


def test_validation() -> None:
    with pytest.raises(ValueError, match="unknown family"):
        FamilyMix(target=("poetry",))
    with pytest.raises(ValueError, match="unknown family"):
        FamilyMix(others={"poetry": 1.0})
    with pytest.raises(ValueError, match="both target and others"):
        FamilyMix(others={"chain": 1.0, "count": 1.0})
    with pytest.raises(ValueError, match="target_share"):
        FamilyMix(target_share=1.5)
    with pytest.raises(ValueError, match="no non-target family"):
        FamilyMix(target=FAMILY_NAMES, target_share=0.5)
    with pytest.raises(ValueError, match="repeats"):
        FamilyMix(target=("chain", "chain"))
    with pytest.raises(ValueError, match="unknown noise types"):
        make_pool(10, noise_mix={"typo": 1.0}, families=FamilyMix())
    with pytest.raises(ValueError, match="systematic types need a family mix"):
        make_pool(10, noise_mix={"sys_carry": 1.0})
    with pytest.raises(ValueError):
        make_pool(10, noise_rate=1.0, noise_mix={"near_duplicate": 1.0}, families=FamilyMix())
    with pytest.raises(ValueError, match="unknown family"):
        make_clean(5, "test", "t", families={"poetry": 1.0})
    assert FamilyMix(target="count").target == ("count",)


def test_deterministic() -> None:
    def key(samples):
        return [(s.id, s.question, s.answer, s.meta, s.image_of, s.brightness) for s in samples]

    a = make_pool(400, 0.4, seed=5, families=FamilyMix())
    b = make_pool(400, 0.4, seed=5, families=FamilyMix())
    c = make_pool(400, 0.4, seed=6, families=FamilyMix())
    assert key(a) == key(b) and key(a) != key(c)
    fams = {f: 1.0 for f in FAMILY_NAMES}
    assert key(make_clean(50, "dev", "a", 1, families=fams)) == key(
        make_clean(50, "dev", "a", 1, families=fams)
    )


# --- systematic errors ---------------------------------------------------------------------------


def test_rules_are_fixed_per_pool_and_from_the_seed(pool) -> None:
    rules = systematic_rules(SEED)
    for t in SYSTEMATIC_TYPES:
        got = {s.meta["rule"] for s in _of(pool, t)}
        assert got == {rules[t]}
    src, dst = map(int, rules["sys_misread"].split("->"))
    assert dst in CONFUSIONS[src]
    assert len({systematic_rules(s)["sys_misread"] for s in range(12)}) > 3


@pytest.mark.parametrize("seed", [SEED, 4])
def test_sys_misread_follows_the_rule(seed: int, pool, chain_pool) -> None:
    samples = _of(pool if seed == SEED else chain_pool, "sys_misread")
    assert len(samples) > 50
    src, dst = map(int, systematic_rules(seed)["sys_misread"].split("->"))
    for s in samples:
        true, said = s.meta["digits"], s.meta["stated_digits"]
        assert src in true
        assert said == [dst if d == src else d for d in true]
        if s.meta["family"] != "answer_only":
            assert stated_digits(s.answer) == said
        got = _parse(s)
        assert got is not None and got != s.meta["answer"]
        fam = FAMILIES[s.meta["family"]]
        if s.meta["family"] in ("chain", "answer_only", "boxed"):
            assert got == TEMPLATE_BY_NAME[s.meta["task"]].solve(said)  # follows the reading
        else:
            assert got == fam.solve(said)


@pytest.mark.parametrize("which", ["pool", "chain_pool"])
def test_sys_carry_drops_the_carry(which: str, request) -> None:
    samples = _of(request.getfixturevalue(which), "sys_carry")
    assert len(samples) > 30
    assert {s.meta["family"] for s in samples} <= {"chain", "answer_only", "boxed", "text_arith"}
    for s in samples:
        true = s.meta["answer"]
        assert 10 <= true <= 19
        assert s.meta["task"] in ("sum", "max_plus_min", "text_arith")
        if s.meta["family"] == "text_arith":
            assert s.meta["op"] == "+"
        if s.meta["family"] != "answer_only":
            assert re.search(rf" \+ \d+ = {true - 10}\.$", s.answer, re.M)
            assert last_computed_value(s.answer) == true - 10
        assert _parse(s) == true - 10 != true


@pytest.mark.parametrize("which", ["pool", "chain_pool"])
def test_sys_operator_solves_difference_as_sum(which: str, request) -> None:
    samples = _of(request.getfixturevalue(which), "sys_operator")
    assert len(samples) > 30
    for s in samples:
        a, b = s.meta["operands"] if s.meta["family"] == "text_arith" else s.meta["digits"]
        assert s.meta["task"] in ("difference", "text_arith")
        if s.meta["family"] == "text_arith":
            assert s.meta["op"] == "-"
        if s.meta["family"] != "answer_only":
            assert f"{a} - {b} = {a + b}." in s.answer
        assert s.meta["answer"] == a - b
        assert _parse(s) == a + b != a - b


def test_sys_format_is_unparsable_but_right(pool) -> None:
    samples = _of(pool, "sys_format")
    assert {s.meta["family"] for s in samples} == set(FAMILY_NAMES)
    for s in samples:
        last = s.answer.splitlines()[-1]
        m = re.fullmatch(r"The answer is (-?\d+)\.", last)
        assert m and int(m.group(1)) == s.meta["answer"]
        assert _parse(s) is None and not is_correct(s.answer, s.meta)


# --- random errors, per family -------------------------------------------------------------------


def test_misread(pool) -> None:
    samples = _of(pool, "misread")
    assert len(samples) > 50
    assert {s.meta["family"] for s in samples} == {
        "chain",
        "answer_only",
        "transcribe",
        "compare",
        "boxed",
    }
    for s in samples:
        true, said = s.meta["digits"], s.meta["stated_digits"]
        assert sum(a != b for a, b in zip(said, true, strict=True)) == 1
        if s.meta["family"] != "answer_only":
            assert stated_digits(s.answer) == said
        got = _parse(s)
        assert got is not None and got != s.meta["answer"]
        if s.meta["family"] in ("chain", "answer_only", "boxed"):
            assert got == TEMPLATE_BY_NAME[s.meta["task"]].solve(said)
        else:
            assert got == FAMILIES[s.meta["family"]].solve(said)


def test_arithmetic(pool) -> None:
    samples = _of(pool, "arithmetic")
    assert len(samples) > 50
    for s in samples:
        got = _parse(s)
        assert got is not None and got != s.meta["answer"]
        if s.meta["family"] in ("chain", "count", "compare", "boxed"):
            assert stated_digits(s.answer) == s.meta["digits"]
        if s.meta["family"] in ("chain", "count", "boxed", "text_arith"):
            assert last_computed_value(s.answer) == got  # the answer follows the slip


def test_answer_mismatch(pool) -> None:
    samples = _of(pool, "answer_mismatch")
    assert len(samples) > 50
    assert "answer_only" not in {s.meta["family"] for s in samples}
    for s in samples:
        got = _parse(s)
        assert got is not None and got != s.meta["answer"]
        if s.meta["family"] != "text_arith":
            assert stated_digits(s.answer) == s.meta["digits"]
        body = "\n".join(s.answer.splitlines()[:-1])
        # the chain is right, only the final line disagrees
        assert FAMILIES[s.meta["family"]].parse(body + "\n" + _clean_final(s)) == s.meta["answer"]


def _clean_final(s) -> str:
    f = FAMILIES[s.meta["family"]]
    return f.final_line(str(s.meta["answer"]))


def test_truncated(pool) -> None:
    samples = _of(pool, "truncated")
    assert len(samples) > 50
    assert {s.meta["detail"] for s in samples} == {"cut", "malformed"}
    assert {s.meta["family"] for s in samples} == set(FAMILY_NAMES)
    for s in samples:
        assert _parse(s) is None


def test_off_task(pool) -> None:
    samples = _of(pool, "off_task")
    assert len(samples) > 50
    assert {s.meta["detail"] for s in samples} == {"other_digits", "other_task", "refusal"}
    for s in samples:
        assert _parse(s) != s.meta["answer"]
        if s.meta["detail"] == "refusal":
            assert _parse(s) is None


def test_near_duplicate(pool) -> None:
    by_id = {s.id: s for s in pool}
    samples = _of(pool, "near_duplicate")
    assert len(samples) > 50
    for s in samples:
        src = by_id[s.meta["duplicate_of"]]
        assert src.meta["noise"] == "clean" and src.meta["family"] == s.meta["family"]
        assert is_correct(s.answer, s.meta) and s.question == src.question
        assert s.has_image == src.has_image
        if not s.has_image:
            assert s.meta["detail"].startswith("text_only")
    assert any(not s.has_image for s in samples)


# --- records, judge, evaluation ------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("v2")
    mix = FamilyMix(target=("chain", "boxed"), target_share=0.4)
    return write_benchmark(out, n_pool=80, n_anchors=12, n_test=10, seed=1, mix=mix)


def test_written_records_and_image_less_samples(written) -> None:
    pool = [json.loads(line) for line in written.pool.read_text().splitlines()]
    text_only = [r for r in pool if r["meta"]["family"] == "text_arith"]
    assert text_only
    for r in pool:
        q = r["conversations"][0]["value"]
        if r["meta"]["family"] == "text_arith":
            assert "image" not in r and "<image>" not in q
        else:
            assert q.startswith("<image>\n") and (written.root / r["image"]).is_file()
    pngs = {p.name for p in written.images.iterdir()}
    assert not any(f"{r['id']}.png" in pngs for r in text_only)
    read = read_records(written.pool)
    assert not read.problems and len(read.records) == 80
    recs = {r.id: r for r in read.records}
    assert all(recs[r["id"]].images == () for r in text_only)
    anchors = [json.loads(line) for line in written.anchors.read_text().splitlines()]
    test = [json.loads(line) for line in written.test.read_text().splitlines()]
    assert {r["meta"]["family"] for r in anchors + test} == {"chain", "boxed"}
    assert all(r["group"] == r["meta"]["task"] for r in anchors)

    from stepsift.bench.target import TargetConfig, collate, example_from_record
    from stepsift.proxy.builtin import BuiltinProxy

    records = read.records[:40]
    batch = BuiltinProxy().collate(records)
    has = batch.tensors["has_image"].tolist()
    assert has == [0.0 if not r.images else 1.0 for r in records] and 0.0 in has
    examples = [example_from_record(r) for r in records]
    assert [e.family for e in examples] == [r.metadata["meta"]["family"] for r in records]
    assert any(e.pixels is None for e in examples)
    tb = collate(examples, TargetConfig())
    assert tb.has_image.tolist() == has


def test_write_deterministic(tmp_path: Path) -> None:
    mix = FamilyMix()
    a = write_benchmark(tmp_path / "a", n_pool=40, n_anchors=5, n_test=5, seed=2, mix=mix)
    b = write_benchmark(tmp_path / "b", n_pool=40, n_anchors=5, n_test=5, seed=2, mix=mix)
    for x, y in ((a.pool, b.pool), (a.anchors, b.anchors), (a.test, b.test)):
        assert x.read_bytes() == y.read_bytes()


def test_score_and_evaluate_per_family(written, monkeypatch: pytest.MonkeyPatch) -> None:
    outs = ["x\n\\boxed{7}", "x\nAnswer: 7", "Answer: 07"]
    assert trainer.score(outs, [7, 7, 7]) == [False, True, True]
    assert trainer.score(outs, [7, 7, 7], ["boxed", "boxed", "transcribe"]) == [
        True,
        False,
        True,
    ]
    test = read_records(written.test).records
    assert {trainer.true_family(r) for r in test} == {"chain", "boxed"}
    # a model that answers every item with its record's own (clean) reply: all correct
    replies = [r.turns[-1].text for r in test]
    monkeypatch.setattr(trainer, "generate_replies", lambda model, ex, *a, **k: replies)
    assert trainer.evaluate(None, test).accuracy == 1.0  # type: ignore[arg-type]
    # the same replies, each in the other family's format: all wrong
    swapped = [
        re.sub(r"\\boxed\{(-?\d+)\}", r"Answer: \1", t)
        if "\\boxed" in t
        else re.sub(r"Answer: (-?\d+)", r"\\boxed{\1}", t)
        for t in replies
    ]
    monkeypatch.setattr(trainer, "generate_replies", lambda model, ex, *a, **k: swapped)
    assert trainer.evaluate(None, test).accuracy == 0.0  # type: ignore[arg-type]


def test_judge_uses_the_family_parser(written, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = read_records(written.pool).records
    # the judge answers each problem with the true answer in the family's clean format
    replies = []
    for r in pool:
        meta = r.metadata["meta"]
        replies.append(FAMILIES[meta["family"]].final_line(str(meta["answer"])))
    monkeypatch.setattr(judge_mod, "generate_replies", lambda model, prompts: replies)
    fake = judge_mod.Judge(None, 0.0, judge_mod.JudgeSettings())  # type: ignore[arg-type]
    result = judge_mod.judge_select(fake, pool)
    want = [r.id for r in pool if is_correct(r.turns[-1].text, r.metadata["meta"])]
    assert result.kept_ids == want and len(want) < len(pool)
    assert any(r.metadata["meta"]["family"] == "boxed" for r in pool if r.id in want)


def test_judge_examples_follow_the_pool_mix() -> None:
    mix = FamilyMix(target_share=0.5, others={"text_arith": 1.0})
    examples = judge_mod.judge_examples(40, seed=0, families=mix.weights())
    assert Counter(e.family for e in examples) == {"chain": 20, "text_arith": 20}
    for e in examples:
        assert (e.pixels is None) == (e.family == "text_arith")
        assert e.turns[0].role == "user" and "<image>" not in e.turns[0].text
    assert judge_mod.JudgeSettings().families is None
    old = judge_mod.judge_examples(5, seed=0)
    assert all(e.family == "chain" and e.pixels is not None for e in old)
