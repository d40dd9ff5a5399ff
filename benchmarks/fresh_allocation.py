"""Why full-parameter Adam updates cost more on some runs than others: the time to write
a product of two 4 x 134.5M float32 tensors (SmolLM2's parameters for a batch of 4, the
size of one of Adam's per-candidate temporaries) into a fresh tensor, against writing it
in place. The difference is the page faults of a fresh 2 GB allocation; run it once plain
and once with `THP_MEM_ALLOC_ENABLE=1` (PyTorch's CPU allocator then asks for transparent
huge pages) to see what that setting buys on this machine.

    python benchmarks/fresh_allocation.py
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/fresh_allocation.py
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--numel", type=int, default=134_515_008, help="per row (SmolLM2's count)")
    ap.add_argument("--rows", type=int, default=4, help="candidates in a batch")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    x = torch.randn(args.rows, args.numel)
    y = torch.randn(args.rows, args.numel)
    out = torch.empty_like(x)
    fresh, in_place = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        z = x * y
        fresh.append(time.perf_counter() - start)
        del z
        start = time.perf_counter()
        torch.mul(x, y, out=out)
        in_place.append(time.perf_counter() - start)
    gb = x.numel() * x.element_size() / 1e9
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")
    print(f"x * y, {gb:.2f} GB each, THP_MEM_ALLOC_ENABLE={thp}, {torch.get_num_threads()} threads")
    print("into a fresh tensor (s): " + " ".join(f"{t:.2f}" for t in fresh))
    print("in place (s):            " + " ".join(f"{t:.2f}" for t in in_place))


if __name__ == "__main__":
    main()
