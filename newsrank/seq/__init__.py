"""Time-aware next-item recommendation (issue 5, Time-LSTM; Zhu et al., IJCAI 2017): event-log
readers (:mod:`.events`), per-user sequences with time intervals and splits (:mod:`.sequences`)
and Recall@K / MRR@K (:mod:`.metrics`)."""

from .events import FORMATS, ReadReport, parse_timestamps, read_events, read_events_with_report
from .metrics import full_ranking_metrics, full_ranks, sample_negatives, sampled_metrics, sampled_ranks
from .sequences import (
    ItemVocab,
    SequenceConfig,
    SequenceSplit,
    UserSequence,
    build_sequences,
    build_vocab,
    leave_last_out,
    pad_sequences,
    reference_split,
    scale_intervals,
    split_last,
)

__all__ = [
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
