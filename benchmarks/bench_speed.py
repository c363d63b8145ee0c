"""In-process speed of every news model on a MIND-format folder: training samples/s over a fixed
number of batches and evaluation impressions/s over the whole dev split (news encoding included),
one process, the same untrained weights for both. Quick before/after figures for a speed change;
`bench_news.py` measures full runs through the CLI.

    python benchmarks/bench_speed.py --data ../shared/data/mlsmall_mind --threads 1 --batches 60
    python benchmarks/bench_speed.py --device cuda --amp --batch-size 256   # on a GPU, bf16 autocast

Evaluation is timed twice: first on the fresh model, as ``newsrank evaluate`` and ``predict`` run
it (a new process: with several ``--models`` each runs in a process of its own), then again after
the training batches, as ``newsrank train``'s end-of-epoch
evaluation runs it. The two differ for allocation-heavy evaluations: the training's backward
passes leave the main thread's malloc arena fragmented (RESULTS.md, "FUM, fifth pass").

Word vectors are random with ``--word-dim`` (50, GloVe 6B 50-d's size) so that nothing is read but
the data; speed does not depend on the values. Prints one row per model, the commit and the machine.
To time another checkout with the same protocol, put it first on the path:
``PYTHONPATH=/path/to/checkout python benchmarks/bench_speed.py ...`` (the commit printed is the
one whose ``newsrank`` ran).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import newsrank

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402
from harness import setup  # noqa: E402


def measure(name: str, data: Path, batches: int, eval_impressions: int | None, word_dim: int,
            device: torch.device, amp: bool, batch_size: int | None) -> dict:
    try:
        from newsrank.core.runtime import autocast
    except ImportError:  # a checkout from before `train.amp` (timed with PYTHONPATH)
        def autocast(device, enabled):
            assert not enabled, "this checkout has no autocast"
            return contextlib.nullcontext()
    from newsrank.data.batching import NewsFeatures, TrainSampler
    from newsrank.evaluate import score_behaviors

    run = setup(name, data, word_dim, eval_impressions)
    config, model, dev_table, dev_behaviors = run.config, run.model.to(device), run.dev_table, run.dev_behaviors
    train_table, train_behaviors = run.train_table, run.train_behaviors
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    news = NewsFeatures.from_table(train_table, device)
    sampler = TrainSampler(train_behaviors, config.train.npratio, batch_size or config.train.batch_size, 0)

    def sync() -> None:  # CUDA runs asynchronously: a timer stops only once the queued work is done
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def evaluation_seconds() -> float:
        sync()
        started = time.perf_counter()
        with autocast(device, amp):
            score_behaviors(model, dev_table, dev_behaviors, config.train.eval_batch_size, device)
        sync()
        return time.perf_counter() - started

    fresh_eval_s = evaluation_seconds()  # as `newsrank evaluate` runs it: nothing trained in this process
    model.train()

    seen, started = 0, None
    for i, batch in enumerate(sampler.epoch(0)):
        if i == batches + 2:
            break
        if i == 2:  # two warm-up batches
            sync()
            seen, started = 0, time.perf_counter()
        batch = batch.to(device)
        with autocast(device, amp):
            logits = model(batch, news).float()
        loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(logits)
    sync()
    train_s = time.perf_counter() - started
    eval_s = evaluation_seconds()  # as `newsrank train` runs it after an epoch
    return {"model": name, "train_samples_per_s": seen / train_s,
            "fresh_eval_impressions_per_s": len(dev_behaviors) / fresh_eval_s,
            "eval_impressions_per_s": len(dev_behaviors) / eval_s, "eval_impressions": len(dev_behaviors)}


def measure_in_new_process(name: str) -> dict:
    """``measure`` of one model in a new process with this run's other arguments (PYTHONPATH and
    the rest of the environment carry over), its table printed here."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "row.json"
        argv, skip = [], False
        for arg in sys.argv[1:]:  # every argument but --models / --json and their values
            if arg.startswith("--"):
                skip = arg.split("=", 1)[0] in ("--models", "--json")
            if not skip:
                argv.append(arg)
        subprocess.run([sys.executable, __file__, *argv, "--models", name, "--json", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["rows"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mlsmall_mind")
    parser.add_argument("--models", nargs="+", default=["nrms", "lstur", "npa", "naml", "fum", "gru", "dkn", "fim"])
    parser.add_argument("--batches", type=int, default=60, help="timed training batches (after 2 warm-up ones)")
    parser.add_argument("--eval-impressions", type=int, default=None, help="first N dev impressions (default all)")
    parser.add_argument("--fim-eval-impressions", type=int, default=500, help="FIM: first N dev impressions")
    parser.add_argument("--word-dim", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (train.amp)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default: the model's config)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print("| model | train samples/s | eval impressions/s, fresh process | eval impressions/s, after training | impressions |")
    print("|---|---|---|---|---|")
    for name in args.models:
        if len(args.models) == 1:
            limit = args.fim_eval_impressions if name == "fim" else args.eval_impressions
            batches = min(args.batches, 20) if name == "fim" else args.batches
            rows.append(measure(name, args.data, batches, limit, args.word_dim, torch.device(args.device), args.amp,
                                args.batch_size))
        else:  # each model in a process of its own, so that "fresh" is fresh for every model
            rows.append(measure_in_new_process(name))
        r = rows[-1]
        print(f"| {name} | {r['train_samples_per_s']:.1f} | {r['fresh_eval_impressions_per_s']:.1f} | "
              f"{r['eval_impressions_per_s']:.1f} | {r['eval_impressions']} |", flush=True)
    code = commit(Path(newsrank.__file__).resolve().parents[1])  # the checkout that ran (PYTHONPATH may pick another)
    print(f"Printed by `python benchmarks/bench_speed.py {' '.join(sys.argv[1:])}` at commit {code} on {machine()}.")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "commit": code, "machine": machine(),
                                         "argv": sys.argv[1:]}, indent=2))


if __name__ == "__main__":
    main()
