"""Memory and time at MIND's sizes: write a MIND-sized synthetic set, preprocess it, train NRMS on
it and evaluate its dev split, each stage in its own process so that its peak RSS is its own.

    python benchmarks/bench_scale.py --preset mind-small --out /tmp/scale_small
    python benchmarks/bench_scale.py --preset mind-large --out /tmp/scale_large --train-batches 300

Stages (each a fresh process; peak RSS from the kernel's accounting of that child):
1. ``newsrank synth --preset P`` (streaming generator);
2. preprocessing: vocabularies + both splits into the cache (a fresh ``NEWSRANK_CACHE`` under --out);
3. ``newsrank train --model nrms`` for ``--train-batches`` batches, one epoch, then its dev
   evaluation over every dev impression (reads the cache of stage 2): samples/s and impressions/s
   come from the run's log.jsonl; its peak RSS covers training and evaluation.
Prints one table with the commit and machine; ``--json`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402

PREPROCESS = """
import sys
from newsrank.config import DataConfig
from newsrank.data.dataset import load_split, load_vocabularies
data = sys.argv[1]
vocabs = load_vocabularies(data + "/train", DataConfig())
for split in ("train", "dev"):
    table, behaviors = load_split(data + "/" + split, vocabs, DataConfig())
    print(split, len(table) - 1, "news", len(behaviors), "impressions", int(behaviors.offsets[-1]), "candidates")
"""


def run_stage(name: str, command: list[str], env: dict) -> dict:
    """Run ``command``; its wall time, CPU time (user + system: what it would take alone, per
    core, when other jobs share the machine) and peak RSS (MiB)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"stage {name} failed ({status}): {' '.join(command)}")
    return {"stage": name, "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024}  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("mind-small", "mind-large"), default="mind-small")
    parser.add_argument("--out", type=Path, required=True, help="working folder (data, cache, run)")
    parser.add_argument("--train-batches", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-synth", action="store_true", help="reuse --out/data from an earlier run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data, run = args.out / "data", args.out / "run"
    env = dict(os.environ, NEWSRANK_CACHE=str(args.out / "cache"), PYTHONPATH=str(ROOT))
    py = [sys.executable]
    rows = []
    if not args.skip_synth:
        rows.append(run_stage("synth", py + ["-m", "newsrank", "synth", "--preset", args.preset, "--out", str(data),
                                             "-q"], env))
    rows.append(run_stage("preprocess", py + ["-c", PREPROCESS, str(data)], env))
    rows.append(run_stage("train + dev evaluation", py + [
        "-m", "newsrank", "train", "--model", "nrms", "--data", str(data), "--out", str(run), "--overwrite", "-q",
        "--epochs", "1", "--set", f"epoch_batches={args.train_batches}", "--set", f"threads={args.threads}"], env))
    record = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    rows[-1] |= {"train_samples_per_s": record["train_samples_per_s"],
                 "eval_impressions_per_s": record["eval_impressions_per_s"],
                 "eval_impressions": record["dev"]["impressions"], "dev_auc": record["dev"]["auc"]}
    print(f"\n{args.preset}:\n\n| stage | wall s | CPU s | peak RSS MiB | throughput |\n|---|---|---|---|---|")
    for row in rows:
        extra = ""
        if "train_samples_per_s" in row:
            extra = (f"{row['train_samples_per_s']:.0f} samples/s; dev {row['eval_impressions']} impressions at "
                     f"{row['eval_impressions_per_s']:.0f}/s (AUC {row['dev_auc']:.4f})")
        print(f"| {row['stage']} | {row['seconds']:.0f} | {row['cpu_seconds']:.0f} | {row['peak_rss_mib']:.0f} | {extra} |")
    print(f"\nPrinted by `python benchmarks/bench_scale.py {' '.join(sys.argv[1:])}` at commit {commit()} on "
          f"{machine()}.")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "commit": commit(), "machine": machine(), "argv": sys.argv[1:]},
                                        indent=2))


if __name__ == "__main__":
    main()
