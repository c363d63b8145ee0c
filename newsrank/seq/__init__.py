"""Time-aware next-item recommendation (Time-LSTM; Zhu et al., IJCAI 2017): event-log readers
(:mod:`.events`), per-user sequences with time intervals and splits (:mod:`.sequences`), padded
batches (:mod:`.batching`), the recurrent cells (:mod:`.cells`) and the next-item model
(:mod:`.model`), the run configuration (:mod:`.config`), training (:mod:`.train`), evaluation
(:mod:`.evaluate`), checkpoints (:mod:`.checkpoint`), Recall@K / MRR@K (:mod:`.metrics`) and a
synthetic log where the interval carries the signal (:mod:`.synth`).

This package imports :mod:`newsrank.core` and its own modules only, never the news models (a test
checks). The log -> MIND-format converter, which knows both sides, is :mod:`newsrank.convert`."""

from .cells import CELLS
from .events import FORMATS, ReadReport, parse_timestamps, read_events, read_events_with_report
from .metrics import full_ranking_metrics, full_ranks, sample_negatives, sampled_metrics, sampled_ranks
from .model import SeqModelConfig, TimeSequenceModel
from .sequences import (
    ItemVocab,
    SequenceConfig,
    SequenceSplit,
    UserSequence,
    build_sequences,
    build_vocab,
    leave_last_out,
    make_split,
    pad_sequences,
    reference_split,
    scale_intervals,
    split_last,
)
from .synth import SeqSynthConfig, generate_events, write_synthetic_events
from .checkpoint import load_seq_checkpoint, save_seq_checkpoint
from .config import SeqDataConfig, SeqRunConfig, SeqTrainConfig, load_seq_config
from .evaluate import evaluate_run, evaluate_targets, score_prefixes
from .train import train_on_events

__all__ = [
    "CELLS",
    "SeqModelConfig",
    "SeqRunConfig",
    "SeqSynthConfig",
    "TimeSequenceModel",
    "generate_events",
    "load_seq_checkpoint",
    "load_seq_config",
    "make_split",
    "evaluate_run",
    "evaluate_targets",
    "score_prefixes",
    "save_seq_checkpoint",
    "SeqDataConfig",
    "SeqTrainConfig",
    "train_on_events",
    "write_synthetic_events",
    "FORMATS",
    "ItemVocab",
    "ReadReport",
    "SequenceConfig",
    "SequenceSplit",
    "UserSequence",
    "build_sequences",
    "build_vocab",
    "full_ranking_metrics",
    "full_ranks",
    "leave_last_out",
    "pad_sequences",
    "parse_timestamps",
    "read_events",
    "read_events_with_report",
    "reference_split",
    "sample_negatives",
    "sampled_metrics",
    "sampled_ranks",
    "scale_intervals",
    "split_last",
]
