"""Time-aware next-item recommendation (Time-LSTM; Zhu et al., IJCAI 2017): event-log readers
(:mod:`.events`), per-user sequences with time intervals and splits (:mod:`.sequences`), the
recurrent cells (:mod:`.cells`) and the next-item model (:mod:`.model`), training and evaluation
(:mod:`.train`), Recall@K / MRR@K (:mod:`.metrics`), a synthetic log where the interval carries
the signal (:mod:`.synth`) and the log -> MIND-format converter (:mod:`.convert`)."""

from .cells import CELLS
from .convert import ConvertConfig, convert_to_mind, read_item_text
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
    pad_sequences,
    reference_split,
    scale_intervals,
    split_last,
)
from .synth import SeqSynthConfig, generate_events, write_synthetic_events
from .train import SeqRunConfig, load_seq_checkpoint, load_seq_config, train_on_events

__all__ = [
    "CELLS",
    "ConvertConfig",
    "SeqModelConfig",
    "SeqRunConfig",
    "SeqSynthConfig",
    "TimeSequenceModel",
    "convert_to_mind",
    "generate_events",
    "load_seq_checkpoint",
    "load_seq_config",
    "read_item_text",
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
