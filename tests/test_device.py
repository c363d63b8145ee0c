"""The device path: bf16 autocast (``train.amp``) for every model, and CUDA end to end when a GPU
is present (the CUDA tests skip on a machine without one, as CI's)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from helpers import tiny_run_config
from newsrank.checkpoint import load_checkpoint, resolve_run
from newsrank.data.dataset import load_split
from newsrank.evaluate import evaluate
from newsrank.models import MODELS
from newsrank.train import train

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _tiny(name: str, device: str, amp: bool, epoch_batches: int = 3):
    config = tiny_run_config(name)
    config.train.epochs = 1
    config.train.epoch_batches = epoch_batches
    config.train.device = device
    config.train.amp = amp
    return config


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_and_evaluates_under_bf16_autocast(name, synth_dir, tmp_path):
    result = train(_tiny(name, "cpu", amp=True), synth_dir, tmp_path / "run", progress=False)
    record = result.history[0]
    assert math.isfinite(record["train_loss"])
    assert 0.0 <= record["dev"]["auc"] <= 1.0
    # The weights stay fp32 (autocast casts per op): the checkpoint is the same format as without amp.
    checkpoint = load_checkpoint(resolve_run(tmp_path / "run"))
    assert all(p.dtype == torch.float32 for p in checkpoint.model.parameters())


@needs_cuda
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_cuda_training_and_evaluation_match_the_cpu(name, amp, synth_dir, tmp_path):
    """Trained on the GPU, the kept checkpoint scores dev on the CPU as it did on the GPU (exactly
    up to float reordering in fp32; within bf16's precision with amp)."""
    result = train(_tiny(name, "cuda", amp), synth_dir, tmp_path / "run", progress=False)
    assert math.isfinite(result.history[0]["train_loss"])
    checkpoint = load_checkpoint(resolve_run(tmp_path / "run"))
    table, behaviors = load_split(synth_dir / "dev", checkpoint.vocabs, checkpoint.config.data)
    on_cpu = evaluate(checkpoint.model.to("cpu"), table, behaviors, 64, "cpu")
    kept = json.loads((tmp_path / "run" / "metrics.json").read_text())
    tolerance = 0.03 if amp else 2e-3
    for key in ("auc", "mrr", "ndcg@10"):
        np.testing.assert_allclose(on_cpu[key], kept[key], atol=tolerance)


@needs_cuda
def test_cuda_evaluation_equals_cpu_for_the_same_weights(synth_dir, tmp_path):
    train(_tiny("nrms", "cpu", amp=False), synth_dir, tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(resolve_run(tmp_path / "run"))
    table, behaviors = load_split(synth_dir / "dev", checkpoint.vocabs, checkpoint.config.data)
    from newsrank.evaluate import score_behaviors

    cpu = score_behaviors(checkpoint.model, table, behaviors, 64, "cpu")
    gpu = score_behaviors(checkpoint.model.to("cuda"), table, behaviors, 64, "cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-4)
