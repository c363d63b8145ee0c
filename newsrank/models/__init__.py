"""Model registry: ``--model NAME`` on the command line picks a class here."""

from __future__ import annotations

from .base import ModelContext, NewsRecModel
from .dkn import DKN
from .fim import FIM
from .fum import FUM
from .gru import GRU
from .lstur import LSTUR
from .naml import NAML
from .npa import NPA
from .nrms import NRMS

MODELS: dict[str, type[NewsRecModel]] = {
    "nrms": NRMS,
    "lstur": LSTUR,
    "npa": NPA,
    "naml": NAML,
    "fum": FUM,
    "gru": GRU,
    "dkn": DKN,
    "fim": FIM,
}


def model_class(name: str) -> type[NewsRecModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})") from None


__all__ = ["MODELS", "ModelContext", "NewsRecModel", "model_class"]
