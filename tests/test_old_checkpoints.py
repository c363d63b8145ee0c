"""Checkpoints written by an earlier layout of the code still load and score exactly as they did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "layout_v1"
EXPECTED = json.loads((FIXTURES / "expected_scores.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["nrms", "fum"])
def test_news_checkpoint_of_the_first_layout_scores_as_it_did(name):
    from newsrank.checkpoint import load_checkpoint
    from newsrank.data.dataset import load_split
    from newsrank.evaluate import score_behaviors

    checkpoint = load_checkpoint(FIXTURES / name)
    table, behaviors = load_split(FIXTURES / "dev", checkpoint.vocabs, checkpoint.config.data, use_cache=False)
    scores = score_behaviors(checkpoint.model, table, behaviors)
    np.testing.assert_allclose(scores, EXPECTED[name], rtol=1e-4, atol=1e-5)


def test_sequence_checkpoint_of_the_first_layout_scores_as_it_did():
    from newsrank.seq.events import read_events
    from newsrank.seq.sequences import build_sequences, split_last
    from newsrank.seq import load_seq_checkpoint, make_split, score_prefixes

    model, config, vocab, _ = load_seq_checkpoint(FIXTURES / "tlstm3")
    sequences, _ = build_sequences(read_events(FIXTURES / "events.csv", "csv"), config.data, vocab=vocab)
    prefixes, _ = split_last(make_split(sequences, config.data).test)
    scores = score_prefixes(model, prefixes, 64, torch.device("cpu"))
    assert np.isneginf(scores[:, 0]).all()  # the padding item
    scores[:, 0] = 0
    np.testing.assert_allclose(scores, EXPECTED["tlstm3"], rtol=1e-4, atol=1e-5)
