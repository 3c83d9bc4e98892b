"""How steps retry: an I/O failure (S3, MLflow, HTTP) is tried again with backoff; a data problem never.

Every asset carries ``IO_RETRY``. A data or logic problem raises ``dg.Failure(allow_retries=False)``
and a failed blocking check fails the step outside user code (``DagsterAssetCheckFailedError``):
neither is retried, because the same input gives the same verdict. Any other exception is taken for
a transient fault of a service the step talks to. A retried step starts over: each asset writes its
outputs per partition by replacing whole objects, so a second attempt overwrites what a first one
left half done (a ``delay_model`` attempt that registered a version and then failed leaves that
version without ``candidate_status=passed``, so it can never be promoted).
"""

import dagster as dg

from infra import settings

IO_RETRY = dg.RetryPolicy(
    max_retries=settings.steps().max_retries,
    delay=settings.steps().retry_delay_s,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
