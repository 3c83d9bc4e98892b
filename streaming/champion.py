"""Which verified unit the processor scores with, and noticing a new one without a restart.

Two sources: a unit folder with its expected SHA-256 (``--unit-dir``/``--unit-digest``: tests, benches,
a pinned model), or BentoML's model store, the one ``make serve`` reads: its newest ``flight_delay``
model (or ``FLIGHT_DELAY_MODEL_TAG``), verified against the digest the `bento` asset recorded.
The store is polled every ``poll_s``; a new tag is verified and loaded before it replaces the old one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ml.model import ModelUnit

logger = logging.getLogger("flightdelay.stream")


@dataclass
class Champion:
    unit: ModelUnit
    version: str


class UnitFolder:
    def __init__(self, directory: Path, digest: str, version: str):
        self.directory, self.digest, self.version = Path(directory), digest, version
        self._champion: Champion | None = None

    def current(self) -> Champion:
        if self._champion is None:
            self._champion = Champion(ModelUnit.load(self.directory, expected_digest=self.digest), self.version)
        return self._champion


class BentoModelStore:
    def __init__(self, tag: str, poll_s: float = 30.0):
        self.tag, self.poll_s = tag, poll_s
        self._champion: Champion | None = None
        self._loaded_tag: str | None = None
        self._refused: set[str] = set()
        self._checked = 0.0

    def current(self) -> Champion:
        """The champion to score with now: a newer stored model replaces it once verified; one that fails
        verification is refused (logged once) and the current champion stays, since a stream cannot pause."""
        if self._champion is not None and time.monotonic() - self._checked <= self.poll_s:
            return self._champion
        self._checked = time.monotonic()
        import bentoml

        from ml.model import UnitIntegrityError
        from serving.verified_model import load_verified_unit

        stored = bentoml.models.get(self.tag)
        tag = str(stored.tag)
        if tag == self._loaded_tag or tag in self._refused:
            if self._champion is None:
                raise UnitIntegrityError(f"{tag} was refused and there is no earlier champion to score with")
            return self._champion
        try:
            unit = load_verified_unit(stored)
        except UnitIntegrityError as exc:
            self._refused.add(tag)
            if self._champion is None:
                raise
            logger.error("new model %s refused, still scoring with %s: %s", tag, self._loaded_tag, exc)
            return self._champion
        version = str(stored.info.metadata.get("mlflow_version") or stored.tag.version)
        if self._champion is not None:
            logger.warning("champion changed without a restart: %s -> %s (registry v%s)", self._loaded_tag, tag, version)
        self._champion, self._loaded_tag = Champion(unit, version), tag
        return self._champion
