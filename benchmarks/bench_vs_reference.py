"""newsrank next to the TensorFlow reference (Microsoft Recommenders' newsrec), same data, same sitting.

The reference runs outside the project (``../shared/tools/tf_reference/recommenders_newsrec.py``,
its own virtualenv; see its README) and writes a JSON summary. Given those JSON files, this script
trains the same model with newsrank for the same epochs on the same training impressions (the
first ``train_impressions`` lines of ``behaviors.tsv``, as the reference's
``--max-train-impressions``) with the same word vectors and one thread, evaluates on the same dev
split, and prints one table: samples/s and impressions/s of both and their ratios, dev AUC of both,
and both commands. Run it right after the reference (figures move with load; only ratios measured
in one sitting mean anything).

    OMP_NUM_THREADS=1 ~/tf-ref/bin/python ../shared/tools/tf_reference/recommenders_newsrec.py \\
        --model nrms --train DATA/train --dev DATA/dev --epochs 1 --glove glove.6B.50d.txt \\
        --word-emb-dim 50 --threads 1 --max-train-impressions 1600 --out /tmp/tf_nrms.json
    python benchmarks/bench_vs_reference.py --data DATA --reference /tmp/tf_nrms.json \\
        --reference-command "the command above"
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402


def capped_copy(data: Path, out: Path, impressions: int | None) -> Path:
    """``out`` with train/ (news.tsv, the first ``impressions`` lines of behaviors.tsv) and dev/ (a link)."""
    (out / "train").mkdir(parents=True)
    (out / "train" / "news.tsv").symlink_to((data / "train" / "news.tsv").resolve())
    with open(data / "train" / "behaviors.tsv", encoding="utf-8") as src, \
            open(out / "train" / "behaviors.tsv", "w", encoding="utf-8") as dst:
        for n, line in enumerate(src):
            if impressions is not None and n >= impressions:
                break
            dst.write(line)
    (out / "dev").symlink_to((data / "dev").resolve())
    return out


def run_newsrank(model: str, data: Path, out: Path, epochs: int, embeddings: str, extra: list[str]) -> tuple[dict, str]:
    args = [sys.executable, "-m", "newsrank.cli", "train", "--model", model, "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), "--set", f"embeddings={embeddings}", "--set", "threads=1", "-q"]
    for item in extra:
        args += ["--set", item]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    samples = sum(r["train_samples"] for r in log)
    seconds = sum(r["train_seconds"] for r in log)
    result = {"train_samples_per_s": samples / seconds, "eval_impressions_per_s": log[-1]["eval_impressions_per_s"],
              "auc": log[-1]["dev"]["auc"], "train_samples": samples}
    shown = ["newsrank", *args[3:]]
    return result, shlex.join(shown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the MIND-format folder the reference read")
    parser.add_argument("--reference", type=Path, nargs="+", required=True, help="the reference's JSON files")
    parser.add_argument("--reference-command", action="append", default=[],
                        help="the command that wrote each JSON (shown under the table)")
    parser.add_argument("--embeddings", default="glove-6b-50d", help="newsrank's name for the same vectors")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra newsrank override")
    args = parser.parse_args()
    rows, commands = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.reference:
            ref = json.loads(path.read_text())
            model, epochs, capped = ref["model"], ref.get("epochs", 1), ref.get("train_impressions")
            data = capped_copy(args.data, Path(tmp) / f"data-{model}", capped)
            ours, command = run_newsrank(model, data, Path(tmp) / f"run-{model}", epochs, args.embeddings,
                                         args.overrides)
            rows.append((model, ref, ours))
            commands.append(command.replace(str(data), f"<{args.data} with the first {capped} train impressions>"))
    print("| model | train samples/s: reference | newsrank | ratio | eval impressions/s: reference | newsrank | "
          "ratio | dev AUC: reference | newsrank |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, ref, ours in rows:
        print(f"| {model} | {ref['train_samples_per_s']:.1f} | {ours['train_samples_per_s']:.1f} | "
              f"{ours['train_samples_per_s'] / ref['train_samples_per_s']:.1f}x | {ref['eval_impressions_per_s']:.1f} | "
              f"{ours['eval_impressions_per_s']:.1f} | {ours['eval_impressions_per_s'] / ref['eval_impressions_per_s']:.1f}x"
              f" | {ref['metrics'].get('group_auc', float('nan')):.4f} | {ours['auc']:.4f} |")
    print()
    for (model, ref, _), command, i in zip(rows, commands, range(len(rows))):
        shown = args.reference_command[i] if i < len(args.reference_command) else f"(see {args.reference[i]})"
        print(f"- {model}: reference (TF {ref.get('tensorflow')}, recommenders {ref.get('recommenders')}, "
              f"{ref.get('threads')} thread): `{shown}`; newsrank: `{command}`")
    print(f"\nPrinted by `python benchmarks/bench_vs_reference.py {shlex.join(sys.argv[1:])}` at commit {commit()} "
          f"on {machine()}.")


if __name__ == "__main__":
    main()
