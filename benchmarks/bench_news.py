"""Benchmark news models through the CLI on a MIND-format folder.

For each model: `newsrank train` for a set number of epochs, then `newsrank evaluate` of the kept
checkpoint on dev. Prints dev AUC / MRR / nDCG@5 / nDCG@10, training samples per second (the
training loop only), evaluation impressions per second (fast evaluation of the whole dev split,
news encoding included), peak resident memory of the training process, the commit and the machine.

    python benchmarks/bench_news.py --data ../shared/data/mlsmall_mind --models nrms --epochs 1 \\
        --set embeddings=glove-6b-50d

With ``--readme benchmarks/RESULTS.md`` the results table there (between the ``results:start`` and
``results:end`` markers, or those of ``--marker NAME``) is replaced by this run's table, with the
command that made it (any Markdown file with the markers works); ``--from-json`` builds one table from earlier runs' ``--json`` files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import tempfile
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit(checkout: Path = ROOT) -> str:
    """The short commit of ``checkout`` (this one by default), ``+dirty`` when tracked files changed."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        torch_version = torch.__version__
    except ImportError:
        device, torch_version = "?", "?"
    return f"{cpu}, {os.cpu_count()} cores, {device}, Python {platform.python_version()}, torch {torch_version}"


def run_child(args: list[str]) -> tuple[float, int]:
    """Run a CLI command; returns (wall seconds, peak resident memory of that process in MiB)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-m", "newsrank.cli", *args], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # the rusage of this one child
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            err.seek(0)
            sys.exit(f"command failed: newsrank {' '.join(args)}\n{err.read().decode(errors='replace')}")
    return seconds, usage.ru_maxrss // 1024  # ru_maxrss is in KiB on Linux


def bench_model(name: str, label: str, data: Path, out: Path, epochs: int, overrides: list[str],
                evaluate_command: bool = True) -> dict:
    run = out / label
    sets = [x for item in overrides for x in ("--set", item)]
    train_args = ["train", "--model", name, "--data", str(data), "--out", str(run), "--epochs", str(epochs), "-q",
                  *sets]
    _, peak_mib = run_child(train_args)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    samples = sum(r["train_samples"] for r in log)
    train_seconds = sum(r["train_seconds"] for r in log)
    if evaluate_command:  # the kept checkpoint through `newsrank evaluate`, as a user runs it
        eval_seconds, _ = run_child(["evaluate", "--run", str(run), "--data", str(data / "dev"),
                                     "--out", str(run / "eval.json"), "-q"])
        metrics = json.loads((run / "eval.json").read_text())
    else:  # the same numbers, as the trainer measured them for the kept checkpoint
        eval_seconds, metrics = None, json.loads((run / "metrics.json").read_text())
    return {
        "model": label,
        "auc": metrics["auc"],
        "mrr": metrics["mrr"],
        "ndcg@5": metrics["ndcg@5"],
        "ndcg@10": metrics["ndcg@10"],
        "impressions": metrics["impressions"],
        "train_samples_per_s": samples / train_seconds,
        # In-loop fast evaluation (news encoding + users + scoring + metrics), best epoch of the run.
        "eval_impressions_per_s": max(r["eval_impressions_per_s"] for r in log),
        # The whole `newsrank evaluate` command: start-up, loading, evaluation, writing.
        "evaluate_command_seconds": eval_seconds,
        "peak_train_rss_mib": peak_mib,
        "epochs": epochs,
    }


def cacheable(label: str) -> str:
    """Whether the model's user vectors can be computed once per user (they do not depend on the
    candidate), read from the model class."""
    from newsrank.models import model_class

    name = label.split(" ")[0]
    try:
        return "no" if getattr(model_class(name), "candidate_aware", False) else "yes"
    except ValueError:
        return "?"


def table(rows: list[dict]) -> str:
    """Two tables in the shape of the FUM paper's Table 1 (quality) and Table 2 (cost), plus peak
    memory. Costs are seconds per 1,000 training samples and per 1,000 dev impressions (the
    in-loop fast evaluation: news encoding, users, scoring, metrics), with the ratio to NRMS's
    when the run has an NRMS row."""
    lines = ["| model | AUC | MRR | nDCG@5 | nDCG@10 |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['auc']:.4f} | {r['mrr']:.4f} | {r['ndcg@5']:.4f} | {r['ndcg@10']:.4f} |")
    base = next((r for r in rows if r["model"].split(" ")[0] == "nrms" and "(" not in r["model"]), None)
    lines += ["", "| model | train s / 1k samples | inference s / 1k impressions | cacheable | peak train RSS (MiB) |",
              "|---|---|---|---|---|"]
    for r in rows:
        train, infer = 1000 / r["train_samples_per_s"], 1000 / r["eval_impressions_per_s"]
        if base is not None:
            train_x = train * base["train_samples_per_s"] / 1000
            infer_x = infer * base["eval_impressions_per_s"] / 1000
            cells = f"{train:.2f} ({train_x:.2f}x) | {infer:.2f} ({infer_x:.2f}x)"
        else:
            cells = f"{train:.2f} | {infer:.2f}"
        lines.append(f"| {r['model']} | {cells} | {cacheable(r['model'])} | {r['peak_train_rss_mib']} |")
    return "\n".join(lines)


def merged_table(paths: list[Path], relabel: dict[str, str] | None = None) -> str:
    """The table of several earlier runs, each row still credited to the run (commit, command)
    that measured it. ``relabel`` renames rows (a label as the run printed it -> the same setting
    named against today's defaults, when the defaults changed since)."""
    relabel = relabel or {}
    rows: dict[str, dict] = {}
    runs = []
    for number, path in enumerate(paths, start=1):
        run = json.loads(path.read_text())
        runs.append(run)
        for row in run["rows"]:
            row = row | {"model": relabel.get(row["model"], row["model"])}
            rows.pop(row["model"], None)  # a re-measured model moves to its new place
            rows[row["model"]] = row | {"run": number}
    labelled = [r | {"model": f"{r['model']} [{r['run']}]"} if len(runs) > 1 else r for r in rows.values()]
    first = next(iter(rows.values()))
    lines = [table(labelled), "", f"Data: dev impressions: {first['impressions']}. "
             + ("[n] is the run that measured the row:" if len(runs) > 1 else "Run:")]
    for number, run in enumerate(runs, start=1):
        if any(r["run"] == number for r in rows.values()):
            lines.append(f"{f'[{number}] ' if len(runs) > 1 else ''}commit {run['commit']}, {run['machine']}: `{run['command']}`")
    return "\n".join(lines)


def update_readme(path: Path, text: str, marker: str = "results") -> None:
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    content = path.read_text(encoding="utf-8")
    if start not in content or end not in content:
        sys.exit(f"{path}: no {start} ... {end} block to replace")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mlsmall_mind",
                        help="MIND-format folder with train/ and dev/ (default ../shared/data/mlsmall_mind)")
    parser.add_argument("--models", nargs="+", default=["nrms"],
                        help="model names; NAME:key=value,key=value adds per-model overrides and a label")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every model")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--relabel", nargs=2, action="append", default=[], metavar=("OLD", "NEW"),
                        help="with --from-json: show the row labelled OLD as NEW (e.g. a setting that was the "
                             "default when it ran, named against today's defaults)")
    parser.add_argument("--skip-evaluate-command", action="store_true",
                        help="take the kept checkpoint's dev metrics from the run instead of running `newsrank "
                             "evaluate` again (the same numbers; saves one evaluation per model)")
    parser.add_argument("--readme", type=Path, help="Markdown file (benchmarks/RESULTS.md) whose results block this table replaces")
    parser.add_argument("--marker", default="results", help="block to replace: <!-- MARKER:start --> ...")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="FILE",
                        help="train nothing: one table from earlier runs' --json files (a later file's row "
                             "replaces an earlier one of the same model label); the footer names each run")
    args = parser.parse_args()
    if args.from_json:
        printed_by = "python benchmarks/bench_news.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        text = merged_table(args.from_json, dict(args.relabel)) + f"\nPrinted by: `{printed_by}`"
        print(text)
        if args.readme:
            update_readme(args.readme, text, args.marker)
        return

    rows = []
    for spec in args.models:
        name, _, extra = spec.partition(":")
        overrides = args.set + [x for x in extra.split(",") if x]
        label = name + (f" ({extra})" if extra else "")
        print(f"# {label}: training {args.epochs} epoch(s) on {args.data} ...", file=sys.stderr, flush=True)
        rows.append(bench_model(name, label, args.data, args.out, args.epochs, overrides,
                                not args.skip_evaluate_command))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    command = "python benchmarks/bench_news.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    footer = (f"\n\nData: `{args.data.name}`, {args.epochs} epoch(s), dev impressions: {rows[0]['impressions']}. "
              f"Commit {commit()}; machine: {machine()}.\nMade by: `{command}`")
    text = table(rows) + footer
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "commit": commit(), "machine": machine(),
                                         "command": command}, indent=2))
    if args.readme:
        update_readme(args.readme, text, args.marker)


if __name__ == "__main__":
    main()
