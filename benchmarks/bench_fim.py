"""FIM evaluation: newsrank's batched scorer against a straightforward per-candidate loop.

Both score the same impressions with the same (untrained) FIM and the same cached HDC states of
every news item. The loop is the model as its paper writes it: for each candidate, stack its
word-word similarity matrices with every clicked news into the K x L x L cube and run the plain
Conv3d -> ReLU -> MaxPool3d stack and the dense layer on it. The batched scorer is
``newsrank.evaluate.score_batch`` (``FIM.score_candidates``): every cube of a batch of impressions
from one matrix product, and a 3-D CNN that skips exactly what is padding. The two must agree.

    python benchmarks/bench_fim.py --data ../shared/data/mlsmall_mind --impressions 300 --threads 1

Also times the model's one-at-a-time reference path (``score_one_at_a_time``: every candidate
through the model's own encoders, the clicked news re-encoded for each) on a few impressions.
Prints impressions per second of each after the news encoding, the ratios, the largest score
differences, the commit and the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402
from newsrank.config import apply_overrides, load_config  # noqa: E402
from newsrank.data.batching import NewsFeatures  # noqa: E402
from newsrank.data.dataset import Behaviors, load_split, load_vocabularies  # noqa: E402
from newsrank.evaluate import encode_all_news, eval_mode, score_behaviors, score_one_at_a_time  # noqa: E402
from newsrank.models import ModelContext, model_class  # noqa: E402
from newsrank.train import split_dirs  # noqa: E402


@torch.no_grad()
def per_candidate_loop(model, vectors: torch.Tensor, behaviors: Behaviors) -> np.ndarray:
    """Scores [T]: one plain 3-D CNN pass per candidate over its K x L x L similarity cube."""
    cfg = model.config
    lv, length, f, k = len(cfg.dilations), cfg.title_words, cfg.filters, cfg.history_clicks
    offsets = np.asarray(behaviors.offsets)
    scores = np.empty(offsets[-1], dtype=np.float32)
    for i in range(len(behaviors)):
        rows = torch.as_tensor(np.asarray(behaviors.history[i], dtype=np.int64))
        rows = rows[rows != 0][-k:]  # the K most recent real clicks
        clicks = torch.zeros(k, lv, length, f)
        clicks[k - len(rows):] = vectors[rows].view(-1, lv, length, f)  # right-aligned, padding zero
        for t in range(offsets[i], offsets[i + 1]):
            cand = vectors[int(behaviors.candidates[t])].view(lv, length, f) / f ** 0.5  # [lv, L, F]
            cube = torch.einsum("lif,kljf->lkij", cand, clicks)  # [lv, K, L, L]
            scores[t] = float(model.dense(model.cnn3d(cube[None]))[0, 0])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="MIND-format folder (default: a fresh `newsrank synth` set)")
    parser.add_argument("--impressions", type=int, default=300, help="first N dev impressions scored")
    parser.add_argument("--reference-impressions", type=int, default=10,
                        help="first N impressions through the (very slow) one-at-a-time reference path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="FIM config override")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from newsrank.data.synth import SynthConfig, write_synthetic_mind

            data = Path(tmp) / "synth"
            write_synthetic_mind(data, SynthConfig())
        config = load_config("fim", model_class("fim").config_class)
        apply_overrides(config, args.overrides)
        train_dir, dev_dir = split_dirs(data)
        vocabs = load_vocabularies(train_dir, config.data)
        table, behaviors = load_split(dev_dir, vocabs, config.data)
        n = min(args.impressions, len(behaviors))
        end = int(behaviors.offsets[n])
        subset = behaviors.slice(0, n)
        model = model_class("fim")(config.model, ModelContext(vocabs))
        reference = subset.slice(0, min(n, args.reference_impressions))

        with eval_mode(model):
            start = time.perf_counter()
            vectors = encode_all_news(model, NewsFeatures.from_table(table), config.train.eval_batch_size)
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            fast = score_behaviors(model, table, subset, batch_size=config.train.eval_batch_size)
            fast_s = time.perf_counter() - start - encode_s  # it encodes the news once too
            start = time.perf_counter()
            slow = per_candidate_loop(model, vectors, subset)
            slow_s = time.perf_counter() - start
            start = time.perf_counter()
            one = score_one_at_a_time(model, table, reference)
            one_s = time.perf_counter() - start
    m = len(reference)
    print(f"FIM evaluation on {data} (first {n} dev impressions, {end} candidates, {args.threads} thread(s))")
    print(f"  news encoding, once            : {encode_s:.1f} s for {len(table) - 1} news")
    print(f"  batched scorer                 : {n / fast_s:8.1f} impressions/s (after the news encoding)")
    print(f"  per-candidate loop             : {n / slow_s:8.1f} impressions/s (cached news states)"
          f" -> batched is {slow_s / fast_s:.1f}x faster")
    print(f"  one-at-a-time reference path   : {m / one_s:8.1f} impressions/s (first {m}; clicks re-encoded"
          f" per candidate) -> batched is {(one_s / m) / (fast_s / n):.1f}x faster")
    print(f"  largest score difference       : {np.abs(fast - slow).max():.2e} (loop), "
          f"{np.abs(fast[: len(one)] - one).max():.2e} (reference path)")
    print(f"Printed by benchmarks/bench_fim.py at commit {commit()} on {machine()}.")


if __name__ == "__main__":
    main()
