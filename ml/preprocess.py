"""Preprocessing fitted on the training split and saved with the weights: vocabularies and scales."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

UNKNOWN_INDEX = 0  # unseen carriers/airports share this bucket


@dataclass
class Preprocessor:
    """Turns feature frames into model inputs: category indices and standardised numbers + missing flags."""

    categorical: dict[str, list[str]]  # column → vocabulary; index = position + 1
    numeric: list[str]
    means: list[float]
    stds: list[float]
    lows: list[float]
    highs: list[float]

    @classmethod
    def fit(cls, frame: pd.DataFrame, categorical: tuple[str, ...], numeric: tuple[str, ...]) -> Preprocessor:
        vocab = {c: sorted(frame[c].dropna().astype(str).unique().tolist()) for c in categorical}
        values = frame[list(numeric)].astype("float64")
        means = values.mean().fillna(0.0)
        stds = values.std().fillna(1.0).replace(0.0, 1.0)
        lows, highs = values.min().fillna(0.0), values.max().fillna(0.0)
        return cls(vocab, list(numeric), means.tolist(), stds.tolist(), lows.tolist(), highs.tolist())

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes, the unknown bucket included."""
        return [len(v) + 1 for v in self.categorical.values()]

    @property
    def numeric_width(self) -> int:
        return 2 * len(self.numeric)  # value and missing flag

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(categories int64 [n, c], numbers float32 [n, 2k])``; missing numbers become 0 with a flag.

        Numbers are clipped to the range seen in training: the network never extrapolates beyond it.
        """
        cats = np.empty((len(frame), len(self.categorical)), dtype=np.int64)
        for i, (column, vocab) in enumerate(self.categorical.items()):
            lookup = pd.Index(vocab)
            codes = lookup.get_indexer(frame[column].astype("string").fillna("\x00"))
            cats[:, i] = np.where(codes < 0, UNKNOWN_INDEX, codes + 1)
        raw = frame[self.numeric].astype("float64").to_numpy()
        missing = np.isnan(raw)
        clipped = np.clip(raw, np.asarray(self.lows), np.asarray(self.highs))
        scaled = (clipped - np.asarray(self.means)) / np.asarray(self.stds)
        scaled[missing] = 0.0
        numbers = np.concatenate([scaled, missing.astype(np.float64)], axis=1).astype(np.float32)
        return cats, numbers

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessor:
        return cls(**data)
