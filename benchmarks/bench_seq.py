"""Benchmark the time-aware next-item models through the CLI on one event log.

For each model: `newsrank seq train` (same settings for all), then its RUN/metrics.json. Prints
Recall@K / MRR@K under both protocols (``sampled``: the true item against 100 uniformly drawn
items, 10 draws averaged, as in the Time-LSTM paper; ``full``: against every item), training
sequences per second, the commit and the machine.

    python benchmarks/bench_seq.py --events ../shared/data/mlsmall/ratings.csv --format movielens
    python benchmarks/bench_seq.py --synthetic --set split=leave_last_out

``--synthetic`` writes the log of ``newsrank seq synth`` (the interval decides the next genre)
and benchmarks on it. ``--constant`` also evaluates every trained model with
``--set eval_delta=constant`` (each test gap replaced by the training median: what the model takes
from time) and adds a second table, Recall@K by the gap to the target (< 1 min, 1 min-1 h,
1 h-1 day, > 1 day), real Δt -> constant Δt. ``--set protocol=paper`` trains with the paper's
protocol (``configs/seq_paper.yaml``; with ``--epochs`` fewer than its 50). With ``--readme benchmarks/RESULTS.md --marker NAME`` the block between
``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` is replaced by this run's table. ``--seeds 42 1 2``
trains every model once per training seed and prints Recall@K per seed and its mean ± sd instead
(one run's differences of a few thousandths are within the spread between seeds).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's newsrank, as the CLI runs it
from bench_news import commit, machine, update_readme  # noqa: E402  (same folder: one copy of each)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["lstm", "lstm_t", "plstm", "tlstm1", "tlstm2", "tlstm3"]


def newsrank(*args: str) -> None:
    with tempfile.TemporaryFile() as err:
        done = subprocess.run([sys.executable, "-m", "newsrank.cli", *args], stdout=subprocess.DEVNULL, stderr=err)
        if done.returncode != 0:
            err.seek(0)
            sys.exit(f"command failed: newsrank {' '.join(args)}\n{err.read().decode(errors='replace')}")


def bench_model(model: str, events: Path, fmt: str, out: Path, epochs: int, overrides: list[str],
                constant: bool = False, reuse: bool = False) -> dict:
    run = out / model
    sets = [x for item in overrides for x in ("--set", item)]
    started = time.perf_counter()
    done = reuse and (run / "metrics.json").is_file() and json.loads((run / "metrics.json").read_text())["epoch"] == epochs
    if not done:
        newsrank("seq", "train", "--model", model, "--events", str(events), "--format", fmt, "--out", str(run),
                 "--epochs", str(epochs), "--overwrite", "-q", *sets)
    command_seconds = time.perf_counter() - started
    metrics = json.loads((run / "metrics.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    extra = {}
    if constant and not (done and (run / "constant.json").is_file()):
        threads = [x for item in overrides if item.split("=")[0].strip() in ("threads", "train.threads")
                   for x in ("--set", item)]
        newsrank("seq", "evaluate", "--run", str(run), "--events", str(events), "--format", fmt,
                 "--out", str(run / "constant.json"), "-q", "--set", "eval_delta=constant", *threads)
    if constant:
        extra["constant"] = json.loads((run / "constant.json").read_text())
    return extra | {
        "model": model,
        "sampled": metrics["sampled"],
        "full": metrics["full"],
        "by_gap": metrics["by_gap"],
        "targets": metrics["targets"],
        "items": metrics["items"],
        "split": metrics["split"],
        # training loop only, over all epochs
        "train_sequences_per_s": sum(r["train_sequences"] for r in log) / sum(r["train_seconds"] for r in log),
        "command_seconds": command_seconds,
    }


def popularity_row(events: Path, fmt: str, overrides: list[str]) -> dict:
    """The reference point every model must clear: rank items by how often they occur in the
    training sequences (the same sequences, split and metrics as the models)."""
    import numpy as np

    from newsrank.seq.events import read_events
    from newsrank.seq.metrics import full_ranking_metrics, sampled_metrics
    from newsrank.seq.sequences import build_sequences, split_last
    from newsrank.seq import load_seq_config, make_split

    config = load_seq_config("lstm", overrides=overrides)
    sequences, vocab = build_sequences(read_events(events, fmt), config.data)
    split = make_split(sequences, config.data)
    _, targets = split_last(split.test)
    counts = np.bincount(np.concatenate([s.items for s in split.train]), minlength=len(vocab)).astype(np.float32)
    counts[0] = -np.inf
    scores = np.broadcast_to(counts, (len(targets), len(counts)))  # [N, V], the same for everybody
    t = config.train
    return {"model": "popularity (no training)", "targets": len(targets), "items": len(vocab) - 1,
            "split": config.data.split, "full": full_ranking_metrics(scores, targets, ks=t.ks),
            "sampled": sampled_metrics(scores, targets, t.num_negatives, t.repeats, t.seed, ks=t.ks),
            "train_sequences_per_s": float("nan")}


def table(rows: list[dict], k: int) -> str:
    constant = any("constant" in r for r in rows)
    head = f"| model | sampled Recall@{k} | sampled MRR@{k} | full Recall@{k} | full MRR@{k} |"
    rule = "|---|---|---|---|---|"
    if constant:
        head += f" sampled / full Recall@{k}, constant Δt |"
        rule += "---|"
    lines = [head + " train sequences/s |", rule + "---|"]
    for r in rows:
        s, f = r["sampled"], r["full"]
        line = (f"| {r['model']} | {s[f'recall@{k}']:.4f} ± {s[f'recall@{k}_std']:.4f} | "
                f"{s[f'mrr@{k}']:.4f} | {f[f'recall@{k}']:.4f} | {f[f'mrr@{k}']:.4f} |")
        if constant:
            c = r.get("constant")
            line += (f" {c['sampled'][f'recall@{k}']:.4f} / {c['full'][f'recall@{k}']:.4f} |" if c else " - |")
        lines.append(line + f" {r['train_sequences_per_s']:.1f} |".replace("nan", "-"))
    return "\n".join(lines)


def gap_table(rows: list[dict], k: int) -> str:
    """Recall@K per bucket of the gap to the target: sampled / full, real Δt -> constant Δt."""
    trained = [r for r in rows if "by_gap" in r]
    buckets = list(trained[0]["by_gap"])
    counts = [trained[0]["by_gap"][b]["count"] for b in buckets]
    lines = ["| model | " + " | ".join(f"{b} ({n} targets)" for b, n in zip(buckets, counts)) + " |",
             "|---|" + "---|" * len(buckets)]

    def cell(section: dict, protocol: str) -> str:
        value = section[protocol][f"recall@{k}"]
        return "-" if value is None or value != value else f"{value:.3f}"  # None / NaN: an empty bucket

    for r in trained:
        cells = []
        for b in buckets:
            real = r["by_gap"][b]
            text = f"{cell(real, 'sampled')} / {cell(real, 'full')}"
            if "constant" in r:
                const = r["constant"]["by_gap"][b]
                text += f" -> {cell(const, 'sampled')} / {cell(const, 'full')}"
            cells.append(text)
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(by_seed: dict[int, list[dict]], k: int) -> str:
    """Full and sampled Recall@K of each model for every training seed, their mean ± sample standard
    deviation, and the mean's difference to the LSTM's (when the LSTM is among the models)."""
    import statistics

    seeds = list(by_seed)
    models = [r["model"] for r in by_seed[seeds[0]] if "by_gap" in r]
    key = f"recall@{k}"

    def values(model: str, protocol: str) -> list[float]:
        return [next(r for r in by_seed[s] if r["model"] == model)[protocol][key] for s in seeds]

    def spread(v: list[float]) -> str:
        return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"

    lstm = statistics.mean(values("lstm", "full")) if "lstm" in models else None
    lines = [f"| model | full Recall@{k}, seeds {', '.join(map(str, seeds))} | full Recall@{k}, mean ± sd | "
             f"mean - LSTM's | sampled Recall@{k}, mean ± sd |", "|---|---|---|---|---|"]
    for model in models:
        full = values(model, "full")
        diff = "-" if lstm is None or model == "lstm" else f"{statistics.mean(full) - lstm:+.4f}"
        lines.append(f"| {model} | {' / '.join(f'{v:.3f}' for v in full)} | {spread(full)} | {diff} | "
                     f"{spread(values(model, 'sampled'))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, default=ROOT.parent / "shared" / "data" / "mlsmall" / "ratings.csv")
    parser.add_argument("--format", default="movielens")
    parser.add_argument("--synthetic", action="store_true", help="benchmark on `newsrank seq synth`'s log instead")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every model")
    parser.add_argument("--reuse", action="store_true",
                        help="read the runs already in --out (trained with the same --epochs) instead of training again")
    parser.add_argument("--constant", action="store_true",
                        help="also evaluate each model with eval_delta=constant and print Recall by target gap")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_seq")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--readme", type=Path, help="Markdown file (benchmarks/RESULTS.md) whose block named by --marker this table replaces")
    parser.add_argument("--marker", default="seq-results")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="train every model once per training seed (`--set seed=N`, runs in OUT/seedN) and print "
                             "the mean ± sd of Recall@K over the seeds instead of one run's tables")
    args = parser.parse_args()

    events, fmt = args.events, args.format
    if args.synthetic:
        args.out.mkdir(parents=True, exist_ok=True)
        events, fmt = args.out / "synthetic.csv", "csv"
        if not (args.reuse and events.is_file()):
            newsrank("seq", "synth", "--out", str(events), "-q")
    if args.seeds:
        by_seed = {}
        for seed in args.seeds:
            overrides = [*args.set, f"seed={seed}"]
            by_seed[seed] = []
            for model in args.models:
                print(f"# {model}, seed {seed}: {args.epochs} epoch(s) on {events} ...", file=sys.stderr, flush=True)
                by_seed[seed].append(bench_model(model, events, fmt, args.out / f"seed{seed}", args.epochs, overrides,
                                                 reuse=args.reuse))
                print(json.dumps(by_seed[seed][-1]), file=sys.stderr, flush=True)
        k = min(by_seed[args.seeds[0]][0]["full"], key=len).split("@")[1]
        command = "python benchmarks/bench_seq.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        first = by_seed[args.seeds[0]][0]
        source = "the synthetic log of `newsrank seq synth`" if args.synthetic else f"`{events.name}`"
        text = (seeds_table(by_seed, int(k)) + f"\n\nData: {source}, {first['items']} items, {first['split']} split, "
                f"{first['targets']} test targets; {args.epochs} epochs; training seeds {', '.join(map(str, args.seeds))} "
                f"(the log is the same). Commit {commit()}; machine: {machine()}.\nMade by: `{command}`")
        print(text)
        if args.json:
            args.json.write_text(json.dumps({"seeds": {str(s): r for s, r in by_seed.items()}, "commit": commit(),
                                             "machine": machine(), "command": command}, indent=2))
        if args.readme:
            update_readme(args.readme, text, args.marker)
        return

    rows = [popularity_row(events, fmt, args.set)]
    for model in args.models:
        print(f"# {model}: {args.epochs} epoch(s) on {events} ...", file=sys.stderr, flush=True)
        rows.append(bench_model(model, events, fmt, args.out, args.epochs, args.set, args.constant, args.reuse))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    k = min(rows[0]["full"], key=len).split("@")[1]  # the first cut-off, e.g. "10"
    command = "python benchmarks/bench_seq.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    source = "the synthetic log of `newsrank seq synth`" if args.synthetic else f"`{events.name}`"
    footer = (f"\n\nData: {source}, {rows[0]['items']} items, {rows[0]['split']} split, {rows[0]['targets']} test "
              f"targets; {args.epochs} epochs. Commit {commit()}; machine: {machine()}.\nMade by: `{command}`")
    text = table(rows, int(k))
    if len(rows) > 1:
        text += (f"\n\nRecall@{k} by the gap between the last observed event and the target, sampled / full"
                 + (", real Δt -> every Δt the training median" if args.constant else "") + ":\n\n"
                 + gap_table(rows, int(k)))
    text += footer
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "commit": commit(), "machine": machine(), "command": command},
                                        indent=2))
    if args.readme:
        update_readme(args.readme, text, args.marker)


if __name__ == "__main__":
    main()
