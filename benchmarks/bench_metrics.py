"""Time the vectorized MIND metrics on synthetic scores (100k impressions by default).

    python benchmarks/bench_metrics.py [--impressions 100000] [--repeat 5]

Prints the best and median wall time of ``impression_metrics`` and ``impression_ranks``, with the
commit and the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench_news import commit, machine
from newsrank.metrics import impression_metrics, impression_ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=100_000)
    parser.add_argument("--min-candidates", type=int, default=5)
    parser.add_argument("--max-candidates", type=int, default=75)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    lengths = rng.integers(args.min_candidates, args.max_candidates + 1, size=args.impressions)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    scores = rng.normal(size=offsets[-1]).astype(np.float32)
    labels = (rng.random(offsets[-1]) < 0.04).astype(np.int8)
    labels[offsets[:-1]] = 1  # every impression has a click

    for name, call in (("impression_metrics", lambda: impression_metrics(scores, labels, offsets)),
                       ("impression_ranks", lambda: impression_ranks(scores, offsets))):
        call()  # warm-up
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        print(f"{name}: {args.impressions} impressions, {offsets[-1]} scores: "
              f"best {min(times) * 1e3:.0f} ms, median {statistics.median(times) * 1e3:.0f} ms")
    print(f"commit {commit()}; machine: {machine()}")


if __name__ == "__main__":
    main()
