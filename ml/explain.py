"""Per-prediction explanations: Captum's integrated gradients on the delay network, per request feature.

Attributions are computed where the network's inputs are continuous: on the categories' embeddings
and on the preprocessed numbers (standardised value and missing flag). Each column of those belongs
to one feature of the unit's own feature list (``Preprocessor.categorical`` and ``.numeric``): an
embedding's dimensions and a number's value and flag columns are summed back to it, so an
explanation names the features a request carries. Anything the model does not take (the flight
number, the date) gets no attribution at all.

Attributions are in log-odds: for each flight they add up (within the integration error, reported
as ``completeness_gap``) to its logit minus the baseline's. The baseline is a typical flight: every
number at its training mean and present, every category at the mean of its known embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ml.model import ModelUnit


@dataclass(frozen=True)
class Contribution:
    feature: str
    attribution: float
    """Signed, in log-odds of a late arrival: positive pushes the prediction towards late."""


@dataclass(frozen=True)
class Explanation:
    delay_probability: float
    baseline_probability: float
    contributions: list[Contribution]
    """The top features by absolute attribution, largest first."""
    completeness_gap: float
    """|sum of all attributions − (logit − baseline logit)|: the integration error, in log-odds."""


def feature_columns(unit: ModelUnit) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(features, embedded_owner, number_owner)``: the unit's features in order, and for each column of
    the embedded categories and of the preprocessed numbers the index of the feature it belongs to."""
    categorical = list(unit.preprocessor.categorical)
    numeric = list(unit.preprocessor.numeric)
    embeddings = unit.network.embeddings  # an ensemble's: each member's in the categorical order, member after member
    widths = [embedding.embedding_dim for embedding in embeddings]
    embedded_owner = np.repeat(np.arange(len(embeddings)) % len(categorical), widths)
    offset = len(categorical)
    number_owner = np.tile(np.arange(offset, offset + len(numeric)), 2)  # values, then missing flags
    return categorical + numeric, embedded_owner, number_owner


def _baselines(unit: ModelUnit, rows: int):
    import torch

    network = unit.network
    typical = torch.cat([embedding.weight[1:].mean(dim=0) for embedding in network.embeddings])
    embedded = typical.detach().expand(rows, -1).clone()
    numbers = torch.zeros(rows, unit.preprocessor.numeric_width, dtype=torch.float32)
    return embedded, numbers


def attributions(unit: ModelUnit, records: Sequence[Mapping], steps: int = 32) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Integrated gradients of each flight's logit per feature: ``(features, attributions [n, f], logits, baseline logits)``.

    Logits are the calibrated ones the unit scores with (divided by its temperature); integrated gradients are
    linear in the output, so the attributions are divided by it too and still add up to the logit difference.
    """
    import torch
    from captum.attr import IntegratedGradients

    network = unit.network.eval()
    cats, numbers = unit.preprocessor.transform_records(records)
    features, embedded_owner, number_owner = feature_columns(unit)
    with torch.no_grad():
        embedded = network.embed(torch.from_numpy(cats))
        numbers_t = torch.from_numpy(numbers)
        base_embedded, base_numbers = _baselines(unit, len(records))
        logits = network.head(embedded, numbers_t).numpy()
        base_logits = network.head(base_embedded, base_numbers).numpy()
    with torch.enable_grad():
        by_embedding, by_number = IntegratedGradients(network.head).attribute(
            (embedded, numbers_t), baselines=(base_embedded, base_numbers), n_steps=steps
        )
    per_feature = np.zeros((len(records), len(features)))
    np.add.at(per_feature.T, embedded_owner, by_embedding.detach().numpy().T)
    np.add.at(per_feature.T, number_owner, by_number.detach().numpy().T)
    scale = 1.0 / unit.temperature
    return features, per_feature * scale, logits * scale, base_logits * scale


def explain_records(unit: ModelUnit, records: Sequence[Mapping], top_k: int = 5, steps: int = 32) -> list[Explanation]:
    """One explanation per record (a mapping with the unit's features, as ``predict_records`` takes)."""
    if not records:
        return []
    features, per_feature, logits, base_logits = attributions(unit, records, steps)
    sigmoid = lambda x: float(1 / (1 + np.exp(-x)))  # noqa: E731
    out = []
    for row, logit, base in zip(per_feature, logits, base_logits):
        order = np.argsort(-np.abs(row), kind="stable")[:top_k]
        out.append(
            Explanation(
                delay_probability=sigmoid(logit),
                baseline_probability=sigmoid(base),
                contributions=[Contribution(features[i], float(row[i])) for i in order],
                completeness_gap=float(abs(row.sum() - (logit - base))),
            )
        )
    return out
