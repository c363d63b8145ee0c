"""The ``newsrank`` command line: synth, train, evaluate, predict (news models on MIND-format
data), serve (a trained run over HTTP, ``newsrank[serve]``), convert (an event log into MIND-format
folders), seq train / seq evaluate / seq synth (time-aware next-item models on event logs) and
report (runs compared).

Scripts and benchmarks drive these commands, so their flags and outputs are a stable contract.
Bad input ends with exit status 2 and one line on stderr naming what is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import logging
import sys
from pathlib import Path

log = logging.getLogger("newsrank")

# The built-in default data set of `newsrank train` without --data (see `newsrank synth`).
DEFAULT_SYNTH = {"users": 2000, "news": 3000, "impressions": 6000, "seed": 0}
# kept literal so that `newsrank --help` does not import torch
SEQ_MODELS = ("lstm", "lstm_t", "plstm", "tlstm1", "tlstm2", "tlstm3")
SEQ_FORMATS = ("csv", "movielens", "lastfm", "citeulike")


class CliError(Exception):
    """An error worth one line on stderr, not a traceback."""


def _synth(args: argparse.Namespace) -> None:
    if args.preset:
        from .data.synth_mind import write_mind_sized

        summary = write_mind_sized(args.out, args.preset, seed=args.seed, progress=not args.quiet)
    else:
        from .data.synth import SynthConfig, write_synthetic_mind

        config = SynthConfig(users=args.users, news=args.news, impressions=args.impressions, seed=args.seed)
        summary = write_synthetic_mind(args.out, config)
    print(json.dumps(summary))


def _default_data() -> Path:
    """The synthetic default, generated once into the cache."""
    from .core.atomic import atomic_folder
    from .data.dataset import cache_root
    from .data.synth import SynthConfig, write_synthetic_mind

    folder = cache_root() / "synthetic" / "-".join(f"{k}{v}" for k, v in DEFAULT_SYNTH.items())
    if not (folder / "dev" / "behaviors.tsv").is_file():
        log.info("no --data given: generating the built-in synthetic MIND data set in %s", folder)
        # An interrupted run leaves nothing half-written; a twin written meanwhile (another process of a
        # torchrun launch) is the same data and is kept.
        with atomic_folder(folder, keep_existing=True) as tmp:
            write_synthetic_mind(tmp, SynthConfig(**DEFAULT_SYNTH))
    return folder


def _launch(nproc: int, argv: list[str]) -> None:
    """Run ``newsrank`` with ``argv`` in ``nproc`` local processes through torch.distributed's
    launcher (what ``torchrun --standalone --nproc_per_node N -m newsrank ...`` does)."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "newsrank", *argv]
    code = subprocess.run(command).returncode
    if code:
        raise CliError(f"the {nproc} training processes failed (exit status {code})")


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def _train(args: argparse.Namespace) -> None:
    if args.nproc is not None and args.nproc < 1:
        raise CliError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        _launch(args.nproc, _without_nproc(args.argv))
        return
    from .config import apply_overrides, load_config
    from .models import model_class
    from .core.runtime import json_ready
    from .train import METRIC_KEYS, train

    cls = model_class(args.model)
    config = load_config(args.model, cls.config_class, args.config)
    apply_overrides(config, args.set or [])
    if args.epochs is not None:
        config.train.epochs = args.epochs
    data = Path(args.data) if args.data else _default_data()
    out = Path(args.out) if args.out else Path("runs") / args.model
    result = train(config, data, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports
        return
    print(json.dumps(json_ready({k: result.best_metrics.get(k) for k in METRIC_KEYS}) | {"epoch": result.best_epoch,
                                                                               "run": str(out)}))


def _load_for_data(run: str, split_dir: str):
    from .checkpoint import load_checkpoint, resolve_run
    from .core.distributed import join
    from .data.dataset import load_split
    from .core.runtime import resolve_device

    folder = resolve_run(run)
    checkpoint = load_checkpoint(folder)
    train = checkpoint.config.train
    world = join(resolve_device(train.device), train.pin_cores)  # a world of one unless torchrun started us
    checkpoint.model.to(world.device)
    table, behaviors = load_split(split_dir, checkpoint.vocabs, checkpoint.config.data)
    from .data.plm import attach_plm
    attach_plm(table, split_dir, checkpoint.config.model)  # PLM title vectors when the model reads them
    return checkpoint, table, behaviors, world


def _train_click_counts(args: argparse.Namespace, checkpoint, table):
    """Training clicks per news row of ``table`` for novelty: from ``--train-data``, else from the
    ``train/`` folder beside the evaluated split (MIND's layout), else None (novelty is then null)."""
    from .beyond import train_click_counts
    from .data.dataset import load_split

    split = Path(args.data).resolve()
    train_dir = Path(args.train_data) if args.train_data else split.parent / "train"
    if not args.train_data and (train_dir == split or not (train_dir / "behaviors.tsv").is_file()):
        log.info("no train split beside %s (pass --train-data DIR): beyond.novelty is null", args.data)
        return None
    train_table, train_behaviors = load_split(train_dir, checkpoint.vocabs, checkpoint.config.data)
    return train_click_counts(train_table, train_behaviors, table)


def _evaluate(args: argparse.Namespace) -> None:
    from .core.atomic import atomic_write_text
    from .core.distributed import leave
    from .evaluate import evaluate
    from .core.runtime import autocast, json_ready

    if args.beyond_k < 1:
        raise CliError(f"--beyond-k must be >= 1, got {args.beyond_k}")
    checkpoint, table, behaviors, world = _load_for_data(args.run, args.data)
    click_counts = _train_click_counts(args, checkpoint, table)
    with autocast(world.device, checkpoint.config.train.amp):
        metrics = json_ready(evaluate(checkpoint.model, table, behaviors, checkpoint.config.train.eval_batch_size,
                                      world.device, progress=not args.quiet and world.is_main, world=world,
                                      click_counts=click_counts, beyond_k=args.beyond_k))
    leave(world)
    if world.is_main:
        atomic_write_text(args.out, json.dumps(metrics, indent=2))
        print(json.dumps(metrics))


def _predict(args: argparse.Namespace) -> None:
    from .core.distributed import leave
    from .core.runtime import autocast
    from .evaluate import score_sharded, write_prediction

    checkpoint, table, behaviors, world = _load_for_data(args.run, args.data)
    with autocast(world.device, checkpoint.config.train.amp):
        scores = score_sharded(checkpoint.model, table, behaviors, world, checkpoint.config.train.eval_batch_size,
                               progress=not args.quiet and world.is_main)
    leave(world)
    if world.is_main:
        archive = write_prediction(args.out, behaviors, scores)
        print(json.dumps({"impressions": len(behaviors), "prediction": str(args.out), "zip": str(archive)}))


def _report(args: argparse.Namespace) -> None:
    from .report import write_report

    command = "newsrank report " + " ".join(args.runs) + f" --out {args.out}"
    if args.eval_file:
        command += f" --eval-file {args.eval_file}"
    print(json.dumps(write_report(args.runs, args.out, args.eval_file, command)))


def _seq_train(args: argparse.Namespace) -> None:
    from .seq.config import load_seq_config
    from .seq.train import train_on_events

    overrides = list(args.set or [])
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    config = load_seq_config(args.model, args.config, overrides)
    metrics = train_on_events(config, args.events, args.out, args.format, overwrite=args.overwrite,
                              progress=not args.quiet, resume=args.resume)
    print(json.dumps(metrics | {"run": str(args.out)}))


def _seq_evaluate(args: argparse.Namespace) -> None:
    from .seq.evaluate import evaluate_run

    metrics = evaluate_run(args.run, args.events, args.format, overrides=args.set)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    print(json.dumps(metrics))


def _seq_synth(args: argparse.Namespace) -> None:
    from .seq.synth import SeqSynthConfig, write_synthetic_events

    config = SeqSynthConfig(users=args.users, items=args.items, seed=args.seed)
    summary = write_synthetic_events(args.out, config, items_path=args.items_out)
    print(json.dumps(summary, default=str))


def _convert(args: argparse.Namespace) -> None:
    from .convert import ConvertConfig, convert_to_mind
    from .seq.events import read_events

    events = read_events(args.events, args.format)
    if args.min_rating is not None and "rating" not in events.columns:
        raise CliError(f"{args.events}: --min-rating given but the file has no rating column")
    config = ConvertConfig(negatives=args.negatives, min_history=args.min_history, dev_fraction=args.dev_fraction,
                           min_rating=args.min_rating, seed=args.seed)
    summary = convert_to_mind(events, args.out, items=args.items, config=config, overwrite=args.overwrite)
    print(json.dumps(summary, default=str))

def _serve(args: argparse.Namespace) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise CliError(f"newsrank serve needs FastAPI and uvicorn ({err.name} is missing): "
                       "pip install 'newsrank[serve]'") from None
    from .core.runtime import set_threads
    from .serve.app import create_app
    from .serve.engine import load_engine

    set_threads(args.threads)
    engine, seconds = load_engine(args.run, args.news, args.behaviors, candidate_pool=args.candidate_pool)
    log.info("%s: %d news served, start-up %.2f s; http://%s:%d/", engine.checkpoint.meta["model"],
             len(engine.pool), seconds, args.host, args.port)
    print(json.dumps({"model": engine.checkpoint.meta["model"], "pool_size": len(engine.pool),
                      "startup_s": round(seconds, 3), "url": f"http://{args.host}:{args.port}/"}), flush=True)
    uvicorn.run(create_app(engine, seconds, max_batch=args.max_batch), host=args.host, port=args.port,
                log_level="warning" if args.quiet else "info", access_log=False)


def _add_run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", "--checkpoint", dest="run", required=True,
                   help="run folder (uses RUN/best) or checkpoint folder (under torchrun write --checkpoint: "
                        "torchrun takes --run for its own --run-path)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    parser = argparse.ArgumentParser(prog="newsrank", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("synth", parents=[common], help="write a synthetic MIND-format data set (train/ and dev/)")
    p.add_argument("--out", required=True, help="folder to write train/ and dev/ into")
    p.add_argument("--users", type=int, default=DEFAULT_SYNTH["users"])
    p.add_argument("--news", type=int, default=DEFAULT_SYNTH["news"])
    p.add_argument("--impressions", type=int, default=DEFAULT_SYNTH["impressions"])
    p.add_argument("--seed", type=int, default=DEFAULT_SYNTH["seed"])
    p.add_argument("--preset", choices=("mind-small", "mind-large"),
                   help="MIND's sizes and shapes, written as a stream in bounded memory (--users/--news/"
                        "--impressions are then ignored)")
    p.set_defaults(func=_synth)

    p = commands.add_parser("train", parents=[common], help="train a model; keeps the best dev checkpoint in --out")
    p.add_argument("--model", default="nrms", help="model name (default nrms)")
    p.add_argument("--data", help="folder with train/ and dev/ MIND-format subfolders "
                                   "(default: the built-in synthetic data set)")
    p.add_argument("--out", help="run folder (default runs/MODEL)")
    p.add_argument("--config", help="YAML config on top of the model's packaged defaults")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config key (repeatable)")
    p.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=N")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last after its last full epoch")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--nproc", type=int, help="train in N local processes (torch.distributed, gloo on CPU, NCCL on "
                                              "GPU); the same as torchrun --nproc_per_node N -m newsrank train ...")
    p.set_defaults(func=_train)

    p = commands.add_parser("evaluate", parents=[common], help="AUC, MRR, nDCG@5, nDCG@10 of a run on a labelled split, "
                                                               "and beyond-accuracy metrics (under `beyond`)")
    _add_run_argument(p)
    p.add_argument("--data", required=True, help="split folder with news.tsv and behaviors.tsv")
    p.add_argument("--out", required=True, help="JSON file for the metrics")
    p.add_argument("--train-data", help="training split folder whose clicks give novelty's popularity "
                                        "(default: train/ beside --data, when there)")
    p.add_argument("--beyond-k", type=int, default=10, help="top-k of the beyond-accuracy metrics (default 10)")
    p.set_defaults(func=_evaluate)

    p = commands.add_parser("predict", parents=[common], help="rank every impression; write the MIND leaderboard file")
    _add_run_argument(p)
    p.add_argument("--data", required=True, help="split folder with news.tsv and behaviors.tsv (labels optional)")
    p.add_argument("--out", required=True, help="prediction.txt to write (prediction.zip is written beside it)")
    p.set_defaults(func=_predict)

    p = commands.add_parser("serve", parents=[common],
                            help="serve recommendations, explanations and a web page over HTTP (newsrank[serve])")
    _add_run_argument(p)
    p.add_argument("--news", required=True, help="news.tsv of the pool to recommend from")
    p.add_argument("--behaviors", help="behaviors.tsv whose users (latest history each) the page offers")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: requests run side by side in FastAPI's thread pool)")
    p.add_argument("--candidate-pool", type=int, default=2000,
                   help="candidate-aware models (DKN, FIM) rank the newest N news when no candidates are given")
    p.add_argument("--max-batch", type=int, default=32,
                   help="whole-pool requests that arrive together share one pass, up to N (1: each on its own)")
    p.set_defaults(func=_serve)

    p = commands.add_parser("convert", parents=[common],
                            help="turn a user,item,timestamp log into MIND-format train/ and dev/ folders")
    p.add_argument("--events", required=True, help="event log file (or MovieLens folder)")
    p.add_argument("--format", default="csv", choices=SEQ_FORMATS, help="log format (default csv)")
    p.add_argument("--items", help="item text: MovieLens movies.csv or a csv/tsv with item,title[,category,...]")
    p.add_argument("--out", required=True, help="folder to write train/ and dev/ into")
    p.add_argument("--min-rating", type=float, help="only events rated at least this are clicks")
    p.add_argument("--negatives", type=int, default=19, help="popularity-sampled non-clicks per impression")
    p.add_argument("--min-history", type=int, default=3, help="a user's first N clicks are history only")
    p.add_argument("--dev-fraction", type=float, default=0.2, help="latest share of clicks (by time) for dev/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_convert)

    p = commands.add_parser("report", parents=[common],
                            help="compare runs (news or sequence): DIR/report.md (one table) and DIR/compare.png")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by `train` / `seq train`")
    p.add_argument("--out", required=True, help="folder for report.md and compare.png")
    p.add_argument("--eval-file", help="a `newsrank evaluate --out RUN/NAME` file name: where a run has it, its "
                                       "metrics replace metrics.json's in the table")
    p.set_defaults(func=_report)

    seq = commands.add_parser("seq", help="time-aware next-item models (LSTM, LSTM_T, PLSTM, Time-LSTM 1/2/3)")
    seq_commands = seq.add_subparsers(dest="seq_command", required=True)
    p = seq_commands.add_parser("train", parents=[common], help="train on an event log; writes RUN/metrics.json")
    p.add_argument("--model", required=True, choices=SEQ_MODELS)
    p.add_argument("--events", required=True, help="event log file (or MovieLens folder)")
    p.add_argument("--format", default="csv", choices=SEQ_FORMATS, help="log format (default csv)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", help="YAML config on top of the packaged configs/seq.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config key (repeatable)")
    p.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=N")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last after its last full epoch")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.set_defaults(func=_seq_train)

    p = seq_commands.add_parser("evaluate", parents=[common], help="Recall@K / MRR@K of a run on an event log")
    p.add_argument("--run", required=True, help="run folder (uses RUN/model) or checkpoint folder")
    p.add_argument("--events", required=True, help="event log; the run's split protocol picks the targets")
    p.add_argument("--format", default="csv", choices=SEQ_FORMATS)
    p.add_argument("--out", help="JSON file for the metrics")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="evaluation setting, e.g. eval_delta=constant (every test gap = the training median)")
    p.set_defaults(func=_seq_evaluate)

    p = seq_commands.add_parser("synth", parents=[common],
                                help="write a synthetic user,item,timestamp log where the interval carries signal")
    p.add_argument("--out", required=True, help="csv file to write")
    p.add_argument("--items-out", help="also write item,title,category (the genres) here, for `newsrank convert`")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_seq_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from .core.malloc import reuse_freed_memory

    reuse_freed_memory()  # batches' large tensors reused, not page-faulted anew (~22% of NRMS evaluation CPU)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        args.func(args)
    except (ValueError, OSError, CliError) as err:  # MindFormatError and ConfigError are ValueErrors
        message = str(err).replace("\n", " ")
        print(f"newsrank: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
