"""Distributed data parallel on the CPU: the same training samples in 1 process and in N processes
(`newsrank train --nproc N`, torch.distributed with gloo), one thread each.

    python benchmarks/bench_ddp.py --data ../shared/data/mlsmall_mind --batches 400 --nproc 2

Both runs train NRMS (GloVe 50-d) on the same ``--batches`` global batches of ``--batch-size``
(default 32, the reference's). Each of the N processes takes its 1/N share of every batch, the
ranks split each batch's distinct news between them (``train.share_news``) and DDP averages the
gradients; then both runs score the whole dev split (sharded over the processes). ``--own-news`` adds a run where every rank encodes all of its share's news.
Prints training samples/s, the speed-ups, each run's dev AUC and the default run's difference from
one process, with the commit and the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402


def train(data: Path, out: Path, batches: int, nproc: int, embeddings: str, batch_size: int,
          share_news: bool = True) -> dict:
    command = [sys.executable, "-m", "newsrank", "train", "--model", "nrms", "--data", str(data), "--out", str(out),
               "--overwrite", "-q", "--epochs", "1", "--set", f"epoch_batches={batches}", "--set", "threads=1",
               "--set", f"embeddings={embeddings}", "--set", f"batch_size={batch_size}"]
    if nproc > 1:
        command += ["--nproc", str(nproc), "--set", f"share_news={str(share_news).lower()}"]
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads((out / "log.jsonl").read_text().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mlsmall_mind")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_ddp"))
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch (every rank takes 1/N of it)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--embeddings", default="glove-6b-50d")
    parser.add_argument("--own-news", action="store_true",
                        help="also run the N processes with train.share_news=false (every rank encodes its own news)")
    args = parser.parse_args()
    single = train(args.data, args.out / "single", args.batches, 1, args.embeddings, args.batch_size)
    runs = [("1 x 1", single)]
    if args.own_news:  # the ranks' shares of each batch encode their own news (train.share_news=false)
        runs.append((f"{args.nproc} x 1, own news",
                     train(args.data, args.out / f"ddp{args.nproc}own", args.batches, args.nproc, args.embeddings,
                           args.batch_size, share_news=False)))
    runs.append((f"{args.nproc} x 1", train(args.data, args.out / f"ddp{args.nproc}", args.batches, args.nproc,
                                            args.embeddings, args.batch_size)))
    print("\n| processes x threads | samples | train samples/s | speed-up | eval impressions/s | dev AUC |")
    print("|---|---|---|---|---|---|")
    for label, r in runs:
        print(f"| {label} | {r['train_samples']} | {r['train_samples_per_s']:.1f} | "
              f"{r['train_samples_per_s'] / single['train_samples_per_s']:.2f}x | {r['eval_impressions_per_s']:.0f} | "
              f"{r['dev']['auc']:.4f} |")
    several = runs[-1][1]
    print(f"\ndev AUC difference: {several['dev']['auc'] - single['dev']['auc']:+.4f}")
    print(f"Printed by `python benchmarks/bench_ddp.py {' '.join(sys.argv[1:])}` at commit {commit()} on {machine()}.")


if __name__ == "__main__":
    main()
