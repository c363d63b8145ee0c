"""Defaults are written once: in the dataclasses. A model's packaged YAML repeats its model section
(documented, and equal to the dataclass) and lists only its real deviations from the shared data
and train defaults; the sequence YAML documents the sequence defaults and equals them."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from newsrank.config import CONFIG_DIR, DataConfig, TrainConfig, load_config
from newsrank.models import MODELS

SHARED = {"data": DataConfig(), "train": TrainConfig()}


def packaged(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text(encoding="utf-8")) or {}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_packaged_yaml_and_dataclasses_agree(name):
    cls = MODELS[name].config_class
    raw = packaged(name)
    assert set(raw) <= {"data", "train", "model"}
    # The model section: every field, each equal to the dataclass default.
    assert set(raw.get("model") or {}) == {f.name for f in dataclasses.fields(cls)}, "model section incomplete"
    config = load_config(name, cls)
    assert config.model == cls(), "the YAML's model section differs from the dataclass defaults"
    # data / train: only real deviations from the shared defaults.
    for section, shared in SHARED.items():
        loaded = getattr(config, section)
        for key in raw.get(section) or {}:
            assert getattr(loaded, key) != getattr(shared, key), f"{name}.yaml repeats the shared default {section}.{key}"
        unlisted = {f.name for f in dataclasses.fields(shared)} - set(raw.get(section) or {})
        assert all(getattr(loaded, k) == getattr(shared, k) for k in unlisted)


def test_sequence_yaml_documents_the_sequence_defaults():
    from newsrank.seq.config import SeqRunConfig, load_seq_config

    raw = packaged("seq")
    defaults = SeqRunConfig().to_dict()
    for section, values in raw.items():
        assert values == {k: v for k, v in defaults[section].items() if k in values}, section
        assert set(defaults[section]) - set(values) <= {"cell"}, f"seq.yaml leaves out {section} keys"
    assert load_seq_config("tlstm1").to_dict() == SeqRunConfig().to_dict() | {
        "model": SeqRunConfig().to_dict()["model"] | {"cell": "tlstm1"}}
