"""The delay model: a small PyTorch network for tabular data, and the unit it is saved and loaded as."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ml.preprocess import Preprocessor

VERSION = "3"
"""Bump when what this module computes changes: the assets built on it become stale (assets/versions.py)."""

WEIGHTS_FILE = "weights.pt"
UNIT_FILE = "unit.json"
UNIT_FILES = (WEIGHTS_FILE, UNIT_FILE)
"""A unit is exactly these files: anything else in its folder is refused, never loaded."""


class UnitIntegrityError(ValueError):
    """A saved unit whose files are not the ones registered (tampered, truncated, or foreign)."""


def unit_digest(directory: str | Path) -> str:
    """SHA-256 over a unit's files (names and bytes, in a fixed order): recorded at registration,
    verified wherever the unit is loaded, before anything in it is read."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in UNIT_FILES:
        path = directory / name
        if not path.is_file():
            raise UnitIntegrityError(f"{directory}: not a saved model unit ({name} missing)")
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def verify_unit(directory: str | Path, expected_digest: str) -> None:
    """Raise UnitIntegrityError unless the unit's files hash to ``expected_digest``."""
    directory = Path(directory)
    extra = sorted(p.name for p in directory.iterdir() if p.name not in UNIT_FILES) if directory.is_dir() else []
    if extra:
        raise UnitIntegrityError(f"{directory}: unexpected file(s) {extra} beside the unit; refused")
    actual = unit_digest(directory)
    if actual != expected_digest:
        raise UnitIntegrityError(
            f"{directory}: SHA-256 {actual[:16]}… does not match the registered {expected_digest[:16]}…; "
            "the unit was changed after registration and is refused"
        )


@dataclass
class ModelConfig:
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    max_embedding_dim: int = 16
    monotone_increasing: tuple[str, ...] = ("precip",)
    """Features whose effect on the delay logit is constrained to be non-decreasing (domain knowledge;
    rain is rare in training data and an unconstrained net extrapolates it either way)."""
    members: int = 3
    """Networks from different initialisations whose logits are averaged (a deep ensemble,
    Lakshminarayanan et al., 2017). On the full-year split single networks ranged over ROC AUC
    0.749–0.754 and test ECE 0.012–0.023 by seed alone; three members: docs/model-quality.md."""


def embedding_dim(cardinality: int, cap: int) -> int:
    return int(min(cap, max(2, round(1.6 * cardinality**0.56))))


class MonotoneBounded(nn.Module):
    """A learned non-decreasing, bounded function per column: a positive mix of increasing sigmoids."""

    def __init__(self, columns: int, units: int = 8):
        super().__init__()
        self.slope = nn.Parameter(torch.zeros(columns, units))
        self.offset = nn.Parameter(torch.linspace(-3.0, 3.0, units).repeat(columns, 1))
        self.height = nn.Parameter(torch.full((columns, units), -2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = torch.sigmoid(nn.functional.softplus(self.slope) * x.unsqueeze(-1) + self.offset)
        return (steps * nn.functional.softplus(self.height)).sum(dim=(1, 2))


class DelayNet(nn.Module):
    """Embeddings for carrier, origin and dest beside standardised numbers, into an MLP → one logit."""

    def __init__(
        self, cardinalities: list[int], numeric_width: int, config: ModelConfig, monotone_columns: list[int] = ()
    ):
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(n, embedding_dim(n, config.max_embedding_dim)) for n in cardinalities
        )
        free = [i for i in range(numeric_width) if i not in set(monotone_columns)]
        self.register_buffer("free_columns", torch.tensor(free, dtype=torch.long))
        self.register_buffer("monotone_columns", torch.tensor(list(monotone_columns), dtype=torch.long))
        self.monotone = MonotoneBounded(len(monotone_columns))
        width = sum(e.embedding_dim for e in self.embeddings) + len(free)
        layers: list[nn.Module] = []
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, categories: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(categories), numbers)

    def embed(self, categories: torch.Tensor) -> torch.Tensor:
        """The categories' embeddings side by side, ``[n, sum of embedding dims]`` (attributions start here)."""
        return torch.cat([emb(categories[:, i]) for i, emb in enumerate(self.embeddings)], dim=1)

    def head(self, embedded: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """The logit from embedded categories and preprocessed numbers."""
        free = numbers.index_select(1, self.free_columns)
        logit = self.mlp(torch.cat([embedded, free], dim=1)).squeeze(1)
        if len(self.monotone_columns):
            monotone = numbers.index_select(1, self.monotone_columns)
            logit = logit + self.monotone(monotone)
        return logit


class DelayEnsemble(nn.Module):
    """``DelayNet`` members trained apart (``ml.train``); the logit is the mean of theirs. Same interface as
    one ``DelayNet``: ``embed`` puts every member's embeddings side by side (``embeddings`` lists them in that
    order), ``head`` averages the members' logits, so explanations and scorers take either."""

    def __init__(self, nets: list[DelayNet]):
        super().__init__()
        self.members = nn.ModuleList(nets)
        self._widths = [sum(e.embedding_dim for e in net.embeddings) for net in nets]

    @property
    def embeddings(self) -> list[nn.Embedding]:
        return [e for net in self.members for e in net.embeddings]

    def forward(self, categories: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(categories, numbers) for net in self.members]).mean(dim=0)

    def embed(self, categories: torch.Tensor) -> torch.Tensor:
        return torch.cat([net.embed(categories) for net in self.members], dim=1)

    def head(self, embedded: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        parts = torch.split(embedded, self._widths, dim=1)
        return torch.stack([net.head(part, numbers) for net, part in zip(self.members, parts)]).mean(dim=0)


class FusedEnsemble(nn.Module):
    """An ensemble's members folded into one wide network, for scoring only (no dropout, no gradients).

    Scoring a few rows is dominated by the per-operation cost of PyTorch, not by arithmetic: three
    members run one after another cost three times one network. Here each categorical has one table
    with every member's embedding side by side, the first layer reads every member's embeddings and the
    shared numbers, the hidden layers are block-diagonal, and the output layer averages the members
    (weights ÷ members): one network's operations for the whole ensemble, the same logits.
    """

    def __init__(self, ensemble: DelayEnsemble):
        super().__init__()
        nets = list(ensemble.members)
        k = len(nets)
        widths = [e.embedding_dim for e in nets[0].embeddings]
        with torch.no_grad():
            self.tables = [torch.cat([net.embeddings[i].weight for net in nets], dim=1) for i in range(len(widths))]
            self.free_columns = nets[0].free_columns
            self.monotone_columns = nets[0].monotone_columns
            linears = [[m for m in net.mlp if isinstance(m, nn.Linear)] for net in nets]
            first = [layers[0] for layers in linears]
            embedded_width = sum(widths)
            # fused embedded columns run categorical by categorical, member by member within one
            columns = []
            for i, width in enumerate(widths):
                start = sum(widths[:i])
                columns += [(member, start, width) for member in range(k)]
            blocks = []
            for member in range(k):
                weight = first[member].weight
                parts = [weight[:, s : s + w] if m == member else weight.new_zeros(weight.shape[0], w) for m, s, w in columns]
                blocks.append(torch.cat([*parts, weight[:, embedded_width:]], dim=1))
            layers: list[tuple[torch.Tensor, torch.Tensor]] = [(torch.cat(blocks), torch.cat([f.bias for f in first]))]
            for depth in range(1, len(linears[0]) - 1):
                layers.append((torch.block_diag(*[ls[depth].weight for ls in linears]), torch.cat([ls[depth].bias for ls in linears])))
            last = [ls[-1] for ls in linears]
            layers.append((torch.cat([l.weight for l in last], dim=1) / k, torch.stack([l.bias for l in last]).mean(dim=0)))
            self.layers = [(w.clone(), b.clone()) for w, b in layers]
            monotone = [net.monotone for net in nets]
            self.slope = torch.cat([nn.functional.softplus(m.slope) for m in monotone], dim=1)
            self.offset = torch.cat([m.offset for m in monotone], dim=1)
            self.height = torch.cat([nn.functional.softplus(m.height) for m in monotone], dim=1) / k

    @torch.no_grad()
    def forward(self, categories: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        embedded = [nn.functional.embedding(categories[:, i], table) for i, table in enumerate(self.tables)]
        x = torch.cat([*embedded, numbers.index_select(1, self.free_columns)], dim=1)
        for weight, bias in self.layers[:-1]:
            x = torch.relu(nn.functional.linear(x, weight, bias))
        weight, bias = self.layers[-1]
        logit = nn.functional.linear(x, weight, bias).squeeze(1)
        if len(self.monotone_columns):
            monotone = numbers.index_select(1, self.monotone_columns)
            steps = torch.sigmoid(self.slope * monotone.unsqueeze(-1) + self.offset)
            logit = logit + (steps * self.height).sum(dim=(1, 2))
        return logit


def members(network: nn.Module) -> list[DelayNet]:
    """The networks a unit's network is made of: an ensemble's members, or the one network."""
    return list(network.members) if isinstance(network, DelayEnsemble) else [network]


@dataclass
class ModelUnit:
    """Weights + preprocessing + config: everything needed to score a feature frame."""

    preprocessor: Preprocessor
    config: ModelConfig
    network: DelayNet
    info: dict = field(default_factory=dict)
    temperature: float = 1.0
    """Logits are divided by it before the sigmoid: fitted on the early-stopping split (``fit_temperature``)
    so probabilities are calibrated; saved in the unit, so every scorer of the unit applies it."""

    @classmethod
    def create(cls, preprocessor: Preprocessor, config: ModelConfig) -> ModelUnit:
        monotone = [preprocessor.numeric.index(c) for c in config.monotone_increasing if c in preprocessor.numeric]
        nets = [DelayNet(preprocessor.cardinalities, preprocessor.numeric_width, config, monotone) for _ in range(config.members)]
        return cls(preprocessor, config, nets[0] if len(nets) == 1 else DelayEnsemble(nets))

    def predict_proba(self, frame: pd.DataFrame, batch_size: int = 65_536) -> np.ndarray:
        """Probability that each flight arrives 15+ minutes late."""
        return self.predict_encoded(*self.preprocessor.transform(frame), batch_size=batch_size)

    def predict_records(self, records) -> np.ndarray:
        """``predict_proba`` for a few rows given as mappings (an online batch)."""
        return self.predict_encoded(*self.preprocessor.transform_records(records))

    def scorer(self) -> nn.Module:
        """What scores: the network, or for an ensemble its ``FusedEnsemble``, rebuilt whenever a weight
        has changed since (training, ``load_state_dict``: every in-place write bumps a tensor's version)."""
        if not isinstance(self.network, DelayEnsemble) or not self.config.hidden:
            return self.network
        params = self.__dict__.get("_params")
        if params is None or params[0] is not self.network:  # walking the modules costs more than the check
            params = self.__dict__["_params"] = (self.network, list(self.network.parameters()))
        stamp = tuple((p.data_ptr(), p._version) for p in params[1])
        cached = self.__dict__.get("_fused")
        if cached is None or cached[0] != stamp:
            cached = (stamp, FusedEnsemble(self.network))
            self.__dict__["_fused"] = cached
        return cached[1]

    @torch.no_grad()
    def predict_encoded(self, cats: np.ndarray, numbers: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
        if self.network.training:  # eval() walks every module: only when needed
            self.network.eval()
        scorer = self.scorer()
        out = []
        for start in range(0, len(cats), batch_size):
            logits = scorer(
                torch.from_numpy(cats[start : start + batch_size]),
                torch.from_numpy(numbers[start : start + batch_size]),
            )
            out.append(torch.sigmoid(logits / self.temperature).numpy())
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)

    def save(self, directory: str | Path) -> Path:
        """Write the unit as a folder: the state_dict (no pickled module) and a JSON description."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.network.state_dict(), directory / WEIGHTS_FILE)
        description = {
            "preprocessor": self.preprocessor.to_dict(),
            "config": asdict(self.config),
            "info": self.info,
            "calibration": {"temperature": self.temperature},
        }
        (directory / UNIT_FILE).write_text(json.dumps(description, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | Path, expected_digest: str | None = None) -> ModelUnit:
        """Load a saved unit; with ``expected_digest`` its files are verified first (UnitIntegrityError).

        Weights are read with ``weights_only=True``: a pickled object in them is refused, never run.
        """
        directory = Path(directory)
        if expected_digest is not None:
            verify_unit(directory, expected_digest)
        description = json.loads((directory / UNIT_FILE).read_text())
        config_data = description["config"]
        config = ModelConfig(
            **{
                **config_data,
                "hidden": tuple(config_data["hidden"]),
                "monotone_increasing": tuple(config_data.get("monotone_increasing", ())),
                "members": int(config_data.get("members", 1)),  # units saved before ensembles had one network
            }
        )
        unit = cls.create(Preprocessor.from_dict(description["preprocessor"]), config)
        try:
            state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError for anything beyond tensors
            raise UnitIntegrityError(f"{directory / WEIGHTS_FILE}: not plain tensor weights; refused ({exc})"[:600]) from None
        unit.network.load_state_dict(state)
        unit.network.eval()
        unit.info = description.get("info", {})
        unit.temperature = float(description.get("calibration", {}).get("temperature", 1.0))
        return unit


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, steps: int = 100) -> float:
    """The temperature T minimising the log loss of ``sigmoid(logits / T)`` (Guo et al., 2017): one
    parameter, so ranking (ROC AUC) is unchanged and only over- or under-confidence is corrected."""
    logits, y = logits.detach().float().cpu(), y.detach().float().cpu()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(logits / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.exp().item())
