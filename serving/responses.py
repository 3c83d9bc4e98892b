"""``POST /predict``'s answer as JSON bytes, encoded once by pydantic-core.

BentoML's own path for a ``list[Prediction]`` return value costs, per response: the output type's
JSON schema built again to find its media type (``IOMixin.mime_type`` → ``TypeAdapter.json_schema``),
the list wrapped and revalidated as a root model, dumped to Python objects, then to JSON by
``json.dumps`` (bench/serve_profile.py). A starlette ``Response`` returned by the api is passed through
as it is (``_bentoml_impl.server.app.api_endpoint``); the api keeps its ``list[Prediction]``
annotation for the OpenAPI spec and the clients.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import TypeAdapter
from starlette.responses import Response

from serving.schema import Prediction

_PREDICTIONS = TypeAdapter(list[Prediction])


def predictions_json(predictions: Sequence[Prediction]) -> bytes:
    """The JSON array of ``predictions``, as BentoML would write it (field names and values alike)."""
    return _PREDICTIONS.dump_json(list(predictions))


def predictions_response(predictions: Sequence[Prediction]) -> Response:
    return Response(predictions_json(predictions), media_type="application/json")
