"""Peak memory of stepsift's data path on Parquet with embedded images, against JSONL with
the same images as files: does memory stay flat as the table grows?

For each size, a table of ShareGPT rows with one embedded PNG each is written as
Parquet (row groups of 100 rows, as `datasets` writes image datasets) and as JSONL plus
image files. Each step runs in a fresh process, whose peak resident memory (VmHWM) is
reported:

- `index`: the validating pass `score`, `select` and `report` make (every image decoded);
- `read all`: the index, then every record read back in the scoring order, a batch of 8
  at a time (the data side of `score`, without the model);
- `imports`: a process that imported stepsift (torch included) and read nothing, the
  floor every other figure stands on;
- `select 20%`: the index, then 20% of the rows, in a random order (as `--order utility`
  gives, the worst case for reading back), written to Parquet (tables only).

    python benchmarks/table_memory.py --rows 10000,100000 --json runs/table_memory.json
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GROUP_ROWS = 100  # datasets' row group size for image datasets


def make_inputs(rows: int, folder: Path, side: int) -> tuple[Path, Path]:
    """The Parquet table and the JSONL + image files, same rows (generated once per size)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    table, jsonl = folder / "pool.parquet", folder / "pool.jsonl"
    if table.is_file() and jsonl.is_file():
        return table, jsonl
    images = folder / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    writer = None
    with open(jsonl, "w") as lines:
        for start in range(0, rows, GROUP_ROWS):
            group = []
            for i in range(start, min(rows, start + GROUP_ROWS)):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, "PNG")
                messages = [
                    {"role": "user", "content": f"<image>Describe picture {i} in one line."},
                    {"role": "assistant", "content": f"Picture {i} is noise " * (1 + i % 5)},
                ]
                group.append({"id": f"p{i}", "messages": messages,
                              "images": [{"bytes": buf.getvalue(), "path": None}]})  # fmt: skip
                (images / f"p{i}.png").write_bytes(buf.getvalue())
                row = {"id": f"p{i}", "messages": messages, "images": [f"images/p{i}.png"]}
                lines.write(json.dumps(row) + "\n")
            batch = pa.Table.from_pylist(group)
            if writer is None:
                writer = pq.ParquetWriter(table, batch.schema)
            writer.write_table(batch, row_group_size=GROUP_ROWS)
    writer.close()
    return table, jsonl


def step(name: str, path: Path, out: Path) -> None:
    """One measured step, in this (fresh) process; prints peak MB and seconds."""
    from stepsift.data import index_records
    from stepsift.data.table_writer import write_table_rows

    start = time.perf_counter()
    if name == "imports":  # the process with stepsift imported, before any data is read
        index = None
    else:
        index = index_records(path)
    if index is not None and index.problems:
        raise SystemExit(f"unexpected problems: {index.problems[:3]}")
    if name == "read":
        order = index.length_order()
        for s in range(0, len(order), 8):
            index.load(order[s : s + 8])
    elif name == "select":
        rng = np.random.default_rng(0)
        kept = rng.permutation(len(index))[: len(index) // 5]
        write_table_rows(index.reader.table, index.where[kept], index.lines[kept], out)
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(x.split()[1]) for x in status if x.startswith("VmHWM")) / 1024
    print(json.dumps({"peak_mb": peak, "seconds": seconds}))


def measure(name: str, path: Path, out: Path) -> dict:
    run = subprocess.run(
        [sys.executable, __file__, "--step", name, "--path", str(path), "--out", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", default="10000,100000")
    ap.add_argument("--image-side", type=int, default=32, help="pixels per side of each image")
    ap.add_argument("--work", type=Path, default=Path("runs/table_memory"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        step(args.step, args.path, args.out)
        return
    results = []
    base = measure("imports", Path("."), Path("."))["peak_mb"]
    print(f"a process with stepsift imported, no data read: {base:.0f} MB peak")
    print("| rows | input | parquet MB | index peak MB | read all peak MB | select 20% peak MB |"
          " index s | read all s | select s |")  # fmt: skip
    print("|---" * 9 + "|")
    for rows in (int(r) for r in args.rows.split(",")):
        folder = args.work / f"rows-{rows}"
        table, jsonl = make_inputs(rows, folder, args.image_side)
        for kind, path in (("parquet", table), ("jsonl", jsonl)):
            got = {s: measure(s, path, folder / "subset.parquet") for s in ("index", "read")}
            if kind == "parquet":
                got["select"] = measure("select", path, folder / "subset.parquet")
            size = table.stat().st_size / 2**20
            results.append({"rows": rows, "input": kind, "parquet_mb": size,
                            "imports_peak_mb": base, **got})  # fmt: skip
            cells = [f"{got[s]['peak_mb']:.0f}" if s in got else "" for s in
                     ("index", "read", "select")]  # fmt: skip
            secs = [f"{got[s]['seconds']:.1f}" if s in got else "" for s in
                    ("index", "read", "select")]  # fmt: skip
            print(f"| {rows:,} | {kind} | {size:.0f} | " + " | ".join(cells + secs) + " |",
                  flush=True)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
