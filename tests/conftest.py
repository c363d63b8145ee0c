"""Shared fixtures: a small synthetic MIND data set, and the real data in ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests use tiny tensors: with two OpenMP threads on a 2-core machine that is also doing
    something else, each op waits for the other thread (measured 55 ms vs 0.6 ms for one small
    convolution step). One thread keeps the suite fast and its CPU use low."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Preprocessing caches go to a per-session temporary folder, never to ~/.cache."""
    monkeypatch.setenv("NEWSRANK_CACHE", str(tmp_path_factory.getbasetemp() / "newsrank-cache"))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic MIND data set (train/ and dev/), generated once per test session."""
    from newsrank.data.synth import SynthConfig, write_synthetic_mind

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_mind(out, SynthConfig(users=60, news=150, impressions=160, seed=7))
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real MIND rows, MovieLens); tests that need it skip cleanly without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA
