"""Secrets never survive redaction: URL credentials, secret query parameters, bearer tokens."""

import pytest

from infra.redaction import redact

CANARY = "s3cr3t-CANARY-8c1f"


@pytest.mark.parametrize(
    "text",
    [
        f"https://user:{CANARY}@mlflow.internal:5000",
        f"postgresql://mlflow:{CANARY}@db:5432/mlflow",
        f"http://127.0.0.1:9/hook?token={CANARY}&channel=ops",
        f"https://example.com/x?api_key={CANARY}",
        f"Authorization: Bearer {CANARY}",
        f"AWS_SECRET_ACCESS_KEY={CANARY}",
        f"could not reach https://{CANARY}@host/path: timed out",
    ],
)
def test_secrets_are_masked(text):
    out = redact(text)
    assert CANARY not in out
    assert "***" in out


def test_plain_text_and_local_uris_are_unchanged():
    for text in ["sqlite:////tmp/mlflow.db", "s3://lake/warehouse/x.parquet", "http://127.0.0.1:5000/#/runs/1"]:
        assert redact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        f"https://hooks.slack.com/services/T0AAA/B0BBB/{CANARY}",
        f"alert to https://ops-webhook.internal/{CANARY} failed",
        f"{{'aws_secret_access_key': '{CANARY}', 'region': 'us-east-1'}}",
        f'{{"password": "{CANARY}"}}',
        f"SERVICE_API_TOKEN={CANARY} bentoml serve",
        f"postgresql+psycopg2://dagster:{CANARY}@db/dagster",
        f"DAGSTER_PG_PASSWORD: {CANARY}",
    ],
)
def test_secrets_in_configuration_dumps_and_webhook_paths_are_masked(text):
    out = redact(text)
    assert CANARY not in out
    assert "***" in out


def test_redaction_is_idempotent_and_keeps_what_is_not_secret():
    text = "run 1 of training_job: api_key=*** token_count=3 at http://127.0.0.1:5000/#/runs/1"
    assert redact(redact(text)) == redact(text)
    assert "http://127.0.0.1:5000/#/runs/1" in redact(text)
