"""``newsrank report RUN [RUN ...] --out DIR``: compare finished runs from their own files.

Writes ``DIR/report.md`` (one table, a row per run) and ``DIR/compare.png`` (grouped bars per
metric; needs matplotlib, else the report says plots are off). Nothing is recomputed: a run is
read from what its trainer wrote, for news runs ``config.yaml``, ``metrics.json``, ``log.jsonl``
and the ``best/checkpoint.json`` header (model, commit), plus ``RUN/<eval file>`` when that
``newsrank evaluate`` output is there (``--eval-file``); for sequence runs ``config.yaml``,
``metrics.json``, ``log.jsonl`` and ``model/checkpoint.json``.

Columns:

* config differences: the keys of ``config.yaml`` (``section.key``) present in every run whose
  values are not all equal, with this run's value (keys only some runs have, another model's own
  settings, are left to the model column);
* dev metrics: news runs the kept checkpoint's AUC, MRR, nDCG@5, nDCG@10 (or the eval file's);
  sequence runs Recall@K and MRR@K, full and sampled (K = the first of ``train.ks``);
* beyond-accuracy metrics (:mod:`newsrank.beyond`), news runs only;
* samples/s: training samples (news: a click with its non-clicks; sequences: a predicted step)
  per second of training, over all epochs; impressions/s: dev impressions (sequences: test
  targets) scored per second, over all epochs;
* peak RSS: the largest ``peak_rss_mib`` of ``log.jsonl`` (the training process; "-" for runs
  written before it was logged); commit: the checkpoint header's (``-`` when not recorded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .core.atomic import atomic_write_text
from .core.plots import write_grouped_bars

NEWS_METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")
BEYOND_METRICS = ("ild", "ild_category", "coverage", "novelty", "calibration_js")
LABELS = {"auc": "AUC", "mrr": "MRR", "ndcg@5": "nDCG@5", "ndcg@10": "nDCG@10", "ild": "ILD",
          "ild_category": "ILD (category)", "coverage": "coverage", "novelty": "novelty (bits)",
          "calibration_js": "calibration JS"}
MISSING = "-"


@dataclass
class RunSummary:
    """What the report shows of one run."""

    name: str  # label in the table and the chart
    path: Path
    kind: str  # "news" or "seq"
    model: str
    config: dict  # flattened config.yaml: "section.key" -> value
    metrics: dict = field(default_factory=dict)  # metric label -> value (None: undefined)
    beyond_k: int | None = None
    samples_per_s: float | None = None
    impressions_per_s: float | None = None
    peak_rss_mib: float | None = None
    commit: str | None = None
    epochs: int = 0


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: missing (is {path.parent} a finished newsrank run?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None


def read_log(path: Path) -> list[dict]:
    """The per-epoch records of a run's ``log.jsonl`` (file and line named on a bad line)."""
    if not path.is_file():
        raise ValueError(f"{path}: missing (is {path.parent} a finished newsrank run?)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or "epoch" not in record:
            raise ValueError(f"{path}: line {number}: not an epoch record (no field 'epoch')")
        records.append(record)
    return records


def flatten(config: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}`` (lists stay values)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, name + ".")
        else:
            out[name] = value
    return out


def _rate(records: list[dict], count_key, seconds_key: str) -> float | None:
    """Sum of counts / sum of seconds over the epochs that logged both."""
    counts = seconds = 0.0
    for record in records:
        count, took = count_key(record), record.get(seconds_key)
        if count is not None and took:
            counts, seconds = counts + count, seconds + took
    return counts / seconds if seconds else None


def _peak_rss(records: list[dict]) -> float | None:
    values = [r["peak_rss_mib"] for r in records if r.get("peak_rss_mib") is not None]
    return max(values) if values else None


def _commit(header_path: Path) -> str | None:
    return _read_json(header_path).get("commit") if header_path.is_file() else None


def read_run(path: str | Path, eval_file: str | None = None) -> RunSummary:
    """A run folder's summary, news or sequence (told apart by its checkpoint folder)."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such run folder")
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"{config_path}: missing (is {path} a finished newsrank run?)")
    try:
        config = flatten(yaml.safe_load(config_path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as err:
        raise ValueError(f"{config_path}: not valid YAML ({err})") from None
    records = read_log(path / "log.jsonl")
    metrics_file = _read_json(path / "metrics.json")
    if (path / "model" / "checkpoint.json").is_file() or "model.cell" in config:
        return _read_seq_run(path, config, records, metrics_file)
    return _read_news_run(path, config, records, metrics_file, eval_file)


def _read_news_run(path: Path, config: dict, records: list[dict], metrics_file: dict,
                   eval_file: str | None) -> RunSummary:
    header_path = path / "best" / "checkpoint.json"
    header = _read_json(header_path) if header_path.is_file() else {}
    source = metrics_file
    if eval_file and (path / eval_file).is_file():  # `newsrank evaluate --out RUN/<eval_file>`
        source = _read_json(path / eval_file)
    summary = RunSummary(name=path.name, path=path, kind="news", model=header.get("model", MISSING), config=config,
                         commit=header.get("commit"), epochs=len(records))
    summary.metrics = {LABELS[k]: source.get(k) for k in NEWS_METRICS}
    beyond = source.get("beyond") or {}
    summary.beyond_k = beyond.get("k")
    summary.metrics |= {LABELS[k]: beyond.get(k) for k in BEYOND_METRICS}
    summary.samples_per_s = _rate(records, lambda r: r.get("train_samples"), "train_seconds")
    summary.impressions_per_s = _rate(records, lambda r: (r.get("dev") or {}).get("impressions"), "eval_seconds")
    summary.peak_rss_mib = _peak_rss(records)
    return summary


def _read_seq_run(path: Path, config: dict, records: list[dict], metrics_file: dict) -> RunSummary:
    ks = config.get("train.ks") or [10]
    k = ks[0]
    summary = RunSummary(name=path.name, path=path, kind="seq", model=str(config.get("model.cell", MISSING)),
                         config=config, commit=_commit(path / "model" / "checkpoint.json"), epochs=len(records))
    for protocol in ("full", "sampled"):
        section = metrics_file.get(protocol) or {}
        for name, label in (("recall", "Recall"), ("mrr", "MRR")):
            summary.metrics[f"{protocol} {label}@{k}"] = section.get(f"{name}@{k}")
    summary.samples_per_s = _rate(records, lambda r: r.get("train_steps"), "train_seconds")
    summary.impressions_per_s = _rate(records, lambda r: r.get("targets"), "eval_seconds")
    summary.peak_rss_mib = _peak_rss(records)
    return summary


def config_differences(runs: list[RunSummary]) -> list[str]:
    """Keys every run's config has, whose values are not all equal (in config order)."""
    if len(runs) < 2:
        return []
    shared = [key for key in runs[0].config if all(key in run.config for run in runs[1:])]
    return [key for key in shared if any(run.config[key] != runs[0].config[key] for run in runs[1:])]


def _format(value, digits: int = 4) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _metric_columns(runs: list[RunSummary]) -> list[str]:
    """Metric labels in first-seen order, only those some run has a value for."""
    columns: list[str] = []
    for run in runs:
        for label, value in run.metrics.items():
            if label not in columns and value is not None:
                columns.append(label)
    return columns


def render_table(runs: list[RunSummary], differences: list[str]) -> str:
    metric_columns = _metric_columns(runs)
    header = ["run", "model", "config differences", *metric_columns, "samples/s", "impressions/s",
              "peak RSS (MiB)", "commit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        diffs = ", ".join(f"{key}={run.config[key]}" for key in differences) or MISSING
        cells = [run.name, run.model, diffs]
        cells += [_format(run.metrics.get(label), 2 if label == LABELS["novelty"] else 4) for label in metric_columns]
        cells += [_format(run.samples_per_s, 1), _format(run.impressions_per_s, 1), _format(run.peak_rss_mib, 0),
                  run.commit or MISSING]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _unique_names(runs: list[RunSummary]) -> None:
    """Runs named alike (``a/nrms``, ``b/nrms``) are labelled by their full path."""
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = str(run.path)


def write_report(run_paths: list[str | Path], out_dir: str | Path, eval_file: str | None = None,
                 command: str | None = None) -> dict:
    """``out_dir/report.md`` and ``out_dir/compare.png``; returns what was written."""
    if not run_paths:
        raise ValueError("newsrank report: give at least one run folder")
    runs = [read_run(path, eval_file) for path in run_paths]
    _unique_names(runs)
    out_dir = Path(out_dir)
    differences = config_differences(runs)

    panels = []
    accuracy = [label for label in _metric_columns(runs) if label not in {LABELS[k] for k in BEYOND_METRICS}]
    if accuracy:
        panels.append(("dev accuracy", accuracy))
    ks = sorted({run.beyond_k for run in runs if run.beyond_k is not None})
    at_k = f" @{ks[0]}" if len(ks) == 1 else ""
    beyond = [LABELS[k] for k in BEYOND_METRICS if k != "novelty" and any(r.metrics.get(LABELS[k]) is not None
                                                                           for r in runs)]
    if beyond:
        panels.append((f"beyond accuracy{at_k}", beyond))
    if any(run.metrics.get(LABELS["novelty"]) is not None for run in runs):
        panels.append((f"novelty{at_k}", [LABELS["novelty"]]))
    chart = out_dir / "compare.png"
    drew = bool(panels) and write_grouped_bars(chart, panels, {run.name: run.metrics for run in runs},
                                               title="newsrank runs compared")

    text = ["# newsrank report", ""]
    if command:
        text += [f"Written by `{command}` from the runs' own files.", ""]
    text.append(render_table(runs, differences))
    if differences:
        text.append(f"Config differences: the {len(differences)} key(s) of `config.yaml` that every run has and whose "
                    "values differ: " + ", ".join(f"`{key}`" for key in differences) + ".")
    else:
        text.append("Config differences: none among the keys every run has.")
    text += ["", "Dev metrics: news runs the kept checkpoint's (`metrics.json`"
             + (f", or `RUN/{eval_file}` where present" if eval_file else "") + "); sequence runs the last epoch's "
             "(full: against every item; sampled: against 100 drawn items). Beyond-accuracy metrics"
             + (f" at k = {', '.join(map(str, ks))}" if ks else "") + " as defined in the README (news runs). "
             "samples/s and impressions/s: over all logged epochs (sequence runs: predicted steps and test "
             "targets). Peak RSS: the training process's, from `log.jsonl`. Commit: from the checkpoint header. "
             "`-`: not recorded or not defined.", ""]
    if drew:
        text += ["![runs compared](compare.png)", ""]
    else:
        text += ["(compare.png not drawn: matplotlib is not installed; `pip install 'newsrank[plot]'`)", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(text))
    return {"report": str(out_dir / "report.md"), "compare": str(chart) if drew else None, "runs": len(runs),
            "config_differences": differences}
