"""A BentoML model's unit, loaded only once its files match the digest recorded when it was stored.

Shared by the service and the stream processor (``streaming/champion.py``): both score the verified unit.
"""

from __future__ import annotations

import logging

from ml.model import ModelUnit, UnitIntegrityError

logger = logging.getLogger("bentoml.flight_delay")

UNIT_FOLDER = "unit"
UNIT_DIGEST_KEY = "unit_sha256"
"""The BentoML model's metadata key holding ``ml.model.unit_digest`` of its unit (written by serving.build)."""


def load_verified_unit(stored) -> ModelUnit:
    """The stored model's unit, verified against the digest recorded when it was saved.

    A model without the digest, or whose files changed since, is refused: nothing of it is loaded.
    """
    digest = stored.info.metadata.get(UNIT_DIGEST_KEY)
    if not digest:
        raise UnitIntegrityError(
            f"BentoML model {stored.tag}: no {UNIT_DIGEST_KEY!r} in its metadata, so its unit cannot be verified "
            "and is not served. Rebuild the Bento from the registry (the bento asset records the digest)."
        )
    unit = ModelUnit.load(stored.path_of(UNIT_FOLDER), expected_digest=str(digest))
    logger.info("model %s: unit verified (sha256 %s…) and loaded", stored.tag, str(digest)[:16])
    return unit
