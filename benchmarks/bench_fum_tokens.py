"""FUM's fine-grained user model: time and memory against the length of the clicked-token sequence.

For 50 clicked news of T tokens each (T = 8, 32, 128 -> 400, 1,600, 6,400 tokens), runs the
fine-grained user model u^f (a Fastformer over the concatenated tokens, then pooling) forward and
backward on a batch of users, each setting in its own process, and prints seconds per batch and the
process's peak resident memory. The same sequence through multi-head self-attention is printed
beside it for contrast (quadratic in the length).

    python benchmarks/bench_fum_tokens.py [--batch 8] [--tokens 8 32 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def measure(kind: str, tokens_per_news: int, batch: int, history: int, threads: int, repeat: int) -> dict:
    import torch

    from newsrank.data.batching import NewsFeatures, UserInputs
    from newsrank.data.vocab import Vocab, Vocabularies
    from newsrank.layers import MultiHeadSelfAttention
    from newsrank.models import ModelContext
    from newsrank.models.fum import FUM, FUMConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    words = 5000
    vocabs = Vocabularies(words=Vocab(f"w{i}" for i in range(words)), categories=Vocab(["a", "b"]),
                          subcategories=Vocab(["c", "d"]), users=Vocab(["u"]))
    config = FUMConfig(tokens_per_news=tokens_per_news, dropout=0.0)
    model = FUM(config, ModelContext(vocabs))
    n_news = batch * history + 1
    title_words = tokens_per_news - 2  # every slot real: the sequence is exactly history * T long
    news = NewsFeatures(
        title=torch.randint(2, words, (n_news, title_words)),
        abstract=torch.zeros(n_news, 1, dtype=torch.long),
        category=torch.randint(2, 4, (n_news,)),
        subcategory=torch.randint(2, 4, (n_news,)),
    )
    news.title[0] = 0  # row 0 is the padding news
    rows = torch.arange(1, n_news).view(batch, history)  # [B, H]
    dim = config.heads * config.head_dim
    user = UserInputs(rows, rows != 0, torch.randn(batch, history, dim), torch.ones(batch, dtype=torch.long), news)
    attention = MultiHeadSelfAttention(config.fastformer_dim, config.fastformer_heads,
                                       config.fastformer_dim // config.fastformer_heads)

    def step():
        if kind == "fastformer":
            out = model.fine_grained_user(user)  # [B, D]
        else:
            x = torch.randn(batch, history * tokens_per_news, config.fastformer_dim, requires_grad=True)
            out = attention(x)  # [B, L, D]
        out.sum().backward()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(repeat):
        step()
    seconds = (time.perf_counter() - started) / repeat
    import resource

    return {"kind": kind, "tokens": history * tokens_per_news, "batch": batch, "seconds_per_batch": seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 32, 128], help="tokens per clicked news")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["fastformer", "self-attention"])
    parser.add_argument("--child", nargs=2, metavar=("KIND", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.batch, args.history, args.threads,
                                 args.repeat)))
        return

    from bench_news import commit, machine

    print("| model | tokens | seconds / batch | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for kind in args.kinds:
        for t in args.tokens:
            command = [sys.executable, __file__, "--child", kind, str(t), "--batch", str(args.batch),
                       "--history", str(args.history), "--threads", str(args.threads), "--repeat", str(args.repeat)]
            result = subprocess.run(command, capture_output=True, text=True, env=os.environ)
            if result.returncode != 0:
                print(f"| {kind} | {args.history * t} | failed: {result.stderr.strip().splitlines()[-1]} | |")
                continue
            row = json.loads(result.stdout)
            print(f"| {kind} | {row['tokens']} | {row['seconds_per_batch']:.2f} | {row['peak_rss_mib']} |", flush=True)
    print(f"\nBatch {args.batch} users x {args.history} clicks, forward + backward; commit {commit()}; "
          f"machine: {machine()}.")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
