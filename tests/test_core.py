"""newsrank.core: the atomic writer, JSON-safe numbers and the checkpoint header."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from newsrank.core.atomic import atomic_folder, atomic_write_text
from newsrank.core.checkpoint import checkpoint_header, read_header, write_checkpoint_files
from newsrank.core.malloc import reuse_freed_memory
from newsrank.core.runtime import json_ready


def test_atomic_folder_replaces_only_on_success_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "run"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("crash midway")
    assert (target / "a.txt").read_text() == "first"  # the old content is intact
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary or old folders left


def test_atomic_folder_keep_existing_drops_the_second_copy(tmp_path):
    target = tmp_path / "cache-entry"
    for text in ("first", "second"):
        with atomic_folder(target, keep_existing=True) as tmp:
            (tmp / "x").write_text(text)
    assert (target / "x").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache-entry"]


def test_atomic_write_text_keeps_the_old_file_on_failure(tmp_path):
    path = atomic_write_text(tmp_path / "deep" / "out.txt", "one\n")
    assert path.read_text() == "one\n"

    with pytest.raises(TypeError):
        atomic_write_text(path, 42)  # not text: nothing is written
    assert path.read_text() == "one\n"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_json_ready_turns_nan_into_null_at_any_depth():
    value = {"auc": float("nan"), "full": {"mrr": np.float32(0.5), "xs": [np.nan, 1.0]}, "n": np.int64(3)}
    ready = json_ready(value)
    assert ready == {"auc": None, "full": {"mrr": 0.5, "xs": [None, 1.0]}, "n": 3}
    json.dumps(ready, allow_nan=False)
    assert math.isnan(value["auc"])  # the input is not changed


def test_checkpoint_header_round_trip_and_checks(tmp_path):
    header = checkpoint_header("demo-format", 2, "news", {"train": {"lr": 1e-3}}, "abc", epoch=3)
    assert {"format", "format_version", "kind", "config", "vocab_digest", "newsrank_version", "torch_version",
            "saved_at", "epoch"} <= set(header)
    write_checkpoint_files(tmp_path, header, torch.nn.Linear(2, 1))
    assert read_header(tmp_path, "demo-format", 2, "a demo checkpoint")["epoch"] == 3
    with pytest.raises(ValueError, match="not a demo checkpoint"):
        read_header(tmp_path, "other-format", 2, "a demo checkpoint")
    with pytest.raises(ValueError, match="newer newsrank"):
        read_header(tmp_path, "demo-format", 1, "a demo checkpoint")
    with pytest.raises(ValueError, match="no checkpoint.json"):
        read_header(tmp_path / "missing", "demo-format", 2, "a demo checkpoint")


def test_atomic_file_streams_and_keeps_the_old_file_on_failure(tmp_path):
    from newsrank.core.atomic import atomic_file

    path = tmp_path / "out.bin"
    with atomic_file(path, binary=True) as handle:
        for _ in range(3):
            handle.write(b"ab")
    assert path.read_bytes() == b"ababab"
    with pytest.raises(RuntimeError):
        with atomic_file(path, binary=True) as handle:
            handle.write(b"zz")
            raise RuntimeError("crash midway")
    assert path.read_bytes() == b"ababab"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]



def test_allocator_tuning_is_on_for_glibc_unless_opted_out(monkeypatch):
    monkeypatch.setenv("NEWSRANK_MALLOC", "default")
    assert reuse_freed_memory.__wrapped__() is False  # the opt-out leaves the allocator alone
    monkeypatch.delenv("NEWSRANK_MALLOC")
    import platform
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert reuse_freed_memory.__wrapped__() is True
