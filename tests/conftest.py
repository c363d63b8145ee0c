"""Shared fixtures: a small synthetic MIND data set, and the real data in ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
