"""How long `stepsift score` takes on a pool of the demo's kind at 100,000 candidates.

The bench's v2 pool (seven task families on handwritten digit images, 40% wrong or
redundant) is generated at `--pool` candidates with 100 anchors, then scored by the CLI
with a fast method and every other default (anchor folds and groups, the gradient sketch,
Adam from the warm-up's state, the self-audit against exact on max(128, 1%) candidates),
on the built-in proxy warmed up on 5% of the pool. Prints the wall time of the whole
`score` call (warm-up and audit included), its peak memory (VmHWM of the scoring process)
and the audit's figures.

    python benchmarks/pool_100k.py --pool 100000 --json runs/pool_100k.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

GENERATE = """
import sys
from pathlib import Path
from stepsift.bench.generate import write_benchmark
from stepsift.bench.runner import BenchConfig
out, n = Path(sys.argv[1]), int(sys.argv[2])
write_benchmark(out, n_pool=n, n_anchors=100, n_test=10, mix=BenchConfig(out=out).mix())
"""
# the CLI, then this process's own peak resident memory
SCORE = """
import sys
from stepsift.cli import main
rc = main(sys.argv[1:])
status = open("/proc/self/status").read().splitlines()
print("VmHWM_kB", next(int(s.split()[1]) for s in status if s.startswith("VmHWM")))
sys.exit(rc)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--method", default="curvature")
    ap.add_argument("--out", type=Path, default=Path("runs/pool_100k"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    data = args.out / f"data-{args.pool}"
    if not (data / "anchors.jsonl").is_file():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", GENERATE, str(data), str(args.pool)], check=True)
        print(f"generated {args.pool:,} candidates in {time.perf_counter() - start:.0f} s")
    scores = args.out / f"scores-{args.method}-{args.pool}.parquet"
    argv = ["score", str(data / "pool.jsonl"), "--anchors", str(data / "anchors.jsonl"),
            "--out", str(scores), "--method", args.method, "--quiet", "--overwrite"]  # fmt: skip
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", SCORE, *argv], check=True, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    print(run.stdout)
    peak_mb = int(run.stdout.split("VmHWM_kB")[-1].split()[0]) / 1024
    settings = json.loads(
        __import__("pyarrow.parquet").parquet.read_schema(scores).metadata[b"stepsift"]
    )
    audit = settings.get("audit") or {}
    report = {
        "pool": args.pool,
        "method": args.method,
        "seconds": seconds,
        "candidates_per_second": args.pool / seconds,
        "peak_mb": peak_mb,
        "audit": {k: audit.get(k) for k in ("n", "spearman", "top20_overlap", "seconds")},
    }
    print(f"{args.pool:,} candidates scored with {args.method} in {seconds / 60:.1f} min "
          f"({report['candidates_per_second']:.0f}/s), peak {peak_mb:.0f} MB; audit "
          f"{report['audit']}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
