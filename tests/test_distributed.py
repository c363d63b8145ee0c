"""Training and evaluation across processes with torch.distributed (gloo on the CPU)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from helpers import TINY_OVERRIDES
from newsrank.cli import main
from newsrank.core.distributed import World
from newsrank.data.batching import TrainSampler
from newsrank.data.dataset import load_split, load_vocabularies
from newsrank.config import DataConfig


def test_ranks_share_out_exactly_the_single_process_batches(synth_dir):
    vocabs = load_vocabularies(synth_dir / "train", DataConfig())
    _, behaviors = load_split(synth_dir / "train", vocabs, DataConfig())
    sampler = TrainSampler(behaviors, npratio=4, batch_size=8, seed=3)
    single = list(sampler.epoch(1))
    ranks = [list(sampler.epoch(1, rank, 2)) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1])  # every rank steps equally often
    for i, (a, b) in enumerate(zip(*ranks)):
        merged = torch.empty_like(single[i].candidates)
        merged[0::2], merged[1::2] = a.candidates, b.candidates
        assert torch.equal(merged, single[i].candidates)
        assert torch.equal(torch.cat([a.users, b.users]).sort().values, single[i].users.sort().values)


def test_world_shards_cover_every_item_once():
    bounds = [World(rank=r, size=3).shard(10) for r in range(3)]
    assert bounds == [(0, 3), (3, 7), (7, 10)]
    assert World().shard(5) == (0, 5) and not World().distributed


def test_two_processes_train_resume_and_evaluate_like_one(synth_dir, tmp_path, capsys):
    """`newsrank train --nproc 2` (torch.distributed.run underneath): only rank 0 writes; the
    sharded dev evaluation equals a single-process evaluation of the kept checkpoint; --resume works."""
    run = tmp_path / "run"
    sets = [x for item in TINY_OVERRIDES["nrms"] + ["threads=1"] for x in ("--set", item)]
    assert main(["train", "--model", "nrms", "--data", str(synth_dir), "--out", str(run), "--epochs", "1",
                 "--nproc", "2", "-q", *sets]) == 0
    curves = ["curves.png"] if importlib.util.find_spec("matplotlib") else []  # the `plot` extra
    assert sorted(p.name for p in run.iterdir()) == ["best", "config.yaml", *curves, "last", "log.jsonl",
                                                     "metrics.json"]
    meta = json.loads((run / "last" / "checkpoint.json").read_text())
    assert meta["processes"] == 2
    assert main(["train", "--model", "nrms", "--data", str(synth_dir), "--out", str(run), "--epochs", "2",
                 "--nproc", "2", "--resume", "-q", *sets]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[0]["train_samples"] == log[1]["train_samples"] > 0  # both ranks' samples counted
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--data", str(synth_dir / "dev"), "--out",
                 str(tmp_path / "eval.json"), "-q"]) == 0
    single = json.loads((tmp_path / "eval.json").read_text())
    kept = json.loads((run / "metrics.json").read_text())
    for key in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        np.testing.assert_allclose(single[key], kept[key], rtol=1e-6)
    for key in ("ild", "ild_category", "coverage", "novelty", "calibration_js"):  # sharded scores, same beyond
        np.testing.assert_allclose(single["beyond"][key], kept["beyond"][key], rtol=1e-5)


def test_nproc_must_be_positive(tmp_path, capsys):
    assert main(["train", "--model", "nrms", "--out", str(tmp_path / "r"), "--nproc", "0", "-q"]) == 2
    assert "--nproc" in capsys.readouterr().err


def test_evaluate_and_predict_in_two_processes_equal_one(synth_dir, tmp_path):
    """Under torchrun, evaluate and predict score in shards; rank 0 writes the same files."""
    import subprocess
    import sys

    run = tmp_path / "run"
    sets = [x for item in TINY_OVERRIDES["nrms"] + ["threads=1"] for x in ("--set", item)]
    assert main(["train", "--model", "nrms", "--data", str(synth_dir), "--out", str(run), "--epochs", "1", "-q",
                 *sets]) == 0
    dev = str(synth_dir / "dev")
    assert main(["evaluate", "--run", str(run), "--data", dev, "--out", str(tmp_path / "one.json"), "-q"]) == 0
    assert main(["predict", "--run", str(run), "--data", dev, "--out", str(tmp_path / "one" / "prediction.txt"),
                 "-q"]) == 0
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "newsrank"]
    subprocess.run([*launch, "evaluate", "--checkpoint", str(run), "--data", dev, "--out",
                    str(tmp_path / "two.json"), "-q"], check=True, capture_output=True)
    subprocess.run([*launch, "predict", "--checkpoint", str(run), "--data", dev, "--out",
                    str(tmp_path / "two" / "prediction.txt"), "-q"], check=True, capture_output=True)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one.keys() == two.keys()
    np.testing.assert_allclose([one[k] for k in ("auc", "mrr", "ndcg@5", "ndcg@10")],
                               [two[k] for k in ("auc", "mrr", "ndcg@5", "ndcg@10")], rtol=1e-6)
    assert (tmp_path / "one" / "prediction.txt").read_text() == (tmp_path / "two" / "prediction.txt").read_text()


MODELS = ["nrms", "lstur", "npa", "naml", "fum", "fum+fine", "gru", "dkn", "fim"]


def test_two_processes_step_with_the_single_process_gradients(synth_dir, tmp_path):
    """One step under DDP (world size 2, gloo) gives a single process's gradients on the whole
    batch, whether each rank encodes all of its share's news or the ranks split the batch's distinct
    news between them (``train.share_news``), with the lookup tables' gradients all-reduced by
    rows (the trainer's ``data_parallel``: declared by the model under news sharing, else found in the
    gradient) or densely, for every news model and FUM with u^f's extra tokens."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "gradients.json"
    script = Path(__file__).parent / "ddp_gradients.py"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                    str(synth_dir), str(out), *MODELS], check=True, capture_output=True)
    differences = json.loads(out.read_text())
    assert sorted(differences) == sorted(MODELS)
    for name, by_mode in differences.items():
        for mode in ("shared", "own", "dense"):
            assert by_mode[mode] < 1e-5, (name, mode, by_mode[mode])
        # with news sharing the word (and entity) tables go by the rows the model declared; without, by a search
        assert by_mode["shared declared rows"] >= 1 and by_mode["own declared rows"] == 0, (name, by_mode)


def test_news_sharing_cuts_runs_of_about_equal_cost():
    """Each rank's run of the length-sorted news costs about 1 / size of the whole; no item is lost."""
    from newsrank.core.distributed import NewsSharing

    costs = torch.tensor([1.0] * 6 + [5.0] * 2, dtype=torch.float64)  # total 16: 8 short items, then 2 long
    assert NewsSharing(0, 2, None).cuts(costs) == [0, 6, 8]  # costs 6 and 10: a run ends before the item that passes half
    assert NewsSharing(0, 4, None).cuts(costs)[::4] == [0, 8]
    assert NewsSharing(1, 3, None).cuts(torch.ones(9, dtype=torch.float64)) == [0, 3, 6, 9]
    assert NewsSharing(0, 2, None).cuts(torch.zeros(0, dtype=torch.float64)) == [0, 0, 0]


def test_a_lookup_outside_the_declared_rows_is_an_error():
    """Under news sharing the ranks average only the rows the model declared for the step; a training
    lookup of any other row would leave the ranks' weights different, so it raises."""
    from types import SimpleNamespace

    from newsrank.layers import LookupTable

    table = LookupTable(10, 3, padding_idx=0)
    table.row_sync = SimpleNamespace(declared=torch.tensor([0, 2, 5]))
    assert table(torch.tensor([[2, 5], [0, 0]])).shape == (2, 2, 3)
    with pytest.raises(RuntimeError, match="outside those declared"):
        table(torch.tensor([2, 7]))
    with torch.no_grad():  # evaluation reads any row
        assert table(torch.tensor([7])).shape == (1, 3)
    table.row_sync.declared = None  # no declaration this step: nothing to check
    assert table(torch.tensor([7])).shape == (1, 3)


def test_each_local_process_is_pinned_to_its_own_cores():
    """Under torchrun on the CPU each process of a machine takes an equal, disjoint share of the cores
    it may use (run in child processes: pinning is process-wide); hyperthread siblings stay together."""
    import os
    import subprocess
    import sys

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_setaffinity on this platform")
    from newsrank.core.distributed import _physical_cores

    cpus = sorted(os.sched_getaffinity(0))
    cores = _physical_cores(cpus)
    assert sorted(cpu for core in cores for cpu in core) == cpus
    script = ("import json, os; from newsrank.core.distributed import pin_to_cores; "
              "print(json.dumps([pin_to_cores(), sorted(os.sched_getaffinity(0))]))")
    shares = []
    for rank in range(2):
        env = dict(os.environ, LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
        returned, now = json.loads(out)
        shares.append(now)
        assert returned in (now, None), out  # what it says it did is what the process got
    if len(cores) >= 2:
        assert shares[0] and len(shares[0]) == len(shares[1]) and not set(shares[0]) & set(shares[1])
        assert set(shares[0]) | set(shares[1]) <= set(cpus)
        for core in cores:  # siblings are never split between the processes
            assert set(core) <= set(shares[0]) or set(core) <= set(shares[1]) or not set(core) & set(shares[0] + shares[1])
    else:  # fewer cores than processes: left to the OS
        assert shares == [cpus, cpus]
