"""What the beyond-accuracy metrics cost next to the evaluation they are part of.

    python benchmarks/bench_beyond.py --data ../shared/data/mlsmall_mind --models nrms naml dkn --threads 1
    python benchmarks/bench_beyond.py --data ../shared/data/mlsmall_mind --models fim --dev-impressions 1000

Per model (packaged config, untrained: speed does not depend on the weights; random
``--word-dim`` word vectors): the best of ``--repeat`` wall times of ``evaluate`` on the whole dev
split without ``beyond`` (news encoding, scoring, AUC/MRR/nDCG), of ``evaluate`` with it, and of
``beyond_metrics`` alone on the same scores and news vectors; the share is beyond alone / the
evaluation without it (the issue's target: under 10%). Prints a Markdown table, the commit and the
machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout's newsrank, not an installed one
from bench_news import commit, machine  # noqa: E402
from harness import setup  # noqa: E402


def best_time(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(name: str, data: Path, word_dim: int, repeat: int, dev_impressions: int | None = None) -> dict:
    from newsrank.beyond import beyond_metrics, train_click_counts
    from newsrank.data.batching import NewsFeatures
    from newsrank.evaluate import encode_all_news, eval_mode, evaluate, score_behaviors

    run = setup(name, data, word_dim, dev_impressions)
    model, table, behaviors = run.model, run.dev_table, run.dev_behaviors
    batch = run.config.train.eval_batch_size
    counts = train_click_counts(run.train_table, run.train_behaviors, table)  # once per run, in the trainer
    plain = best_time(lambda: evaluate(model, table, behaviors, batch, beyond_k=None), repeat)
    full = best_time(lambda: evaluate(model, table, behaviors, batch, click_counts=counts), repeat)
    vectors = None
    if not model.user_conditioned_news:
        with eval_mode(model):
            vectors = encode_all_news(model, NewsFeatures.from_table(table), batch)
    scores = score_behaviors(model, table, behaviors, batch, news_vectors=vectors)
    offsets, candidates, history = (np.asarray(behaviors.offsets), np.asarray(behaviors.candidates),
                                    np.asarray(behaviors.history))
    alone = best_time(lambda: beyond_metrics(scores, offsets, candidates, history, table.category, counts, vectors),
                      repeat)
    dim = "-" if vectors is None else int(vectors.reshape(len(vectors), -1).shape[1])
    return {"model": name, "impressions": len(behaviors), "candidates": int(offsets[-1]), "dim": dim,
            "plain": plain, "full": full, "alone": alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mlsmall_mind")
    parser.add_argument("--models", nargs="+", default=["nrms", "naml", "dkn", "fim"])
    parser.add_argument("--word-dim", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dev-impressions", type=int, help="the first N dev impressions only (FIM: ~30 ms each)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print("| model | dev impressions | candidates | vector dim | evaluate s (no beyond) | evaluate s (with) "
          "| beyond_metrics s | beyond / evaluate |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        r = measure(name, args.data, args.word_dim, args.repeat, args.dev_impressions)
        print(f"| {name} | {r['impressions']} | {r['candidates']} | {r['dim']} | {r['plain']:.2f} | {r['full']:.2f} "
              f"| {r['alone']:.3f} | {100 * r['alone'] / r['plain']:.1f}% |", flush=True)
    print(f"\ncommit {commit()}; machine: {machine()}; torch threads {args.threads}; best of {args.repeat}; "
          f"command: python benchmarks/bench_beyond.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
