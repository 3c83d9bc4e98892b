"""bento_release: the verified Bento exported to the bucket (SSE, digest, importable) and the image tag to roll."""

import hashlib
import subprocess

import dagster as dg
import pytest

from assets.inference import bento, bento_release
from resources.bento_store import BentoStore, image_reference, release_file_name

BUCKET = "flight-delay-releases"
REPOSITORY = "registry.example.com/flight-delay/service"


def _store(home, **fields) -> BentoStore:
    return BentoStore(bentoml_home=str(home), prediction_log_url=str(home / "plog"), **fields)


def _record_verified(instance: dg.DagsterInstance, bento_tag: str) -> None:
    """What a `bento` run whose parity check passed records (the asset's own test covers that run)."""
    instance.report_runless_asset_event(dg.AssetMaterialization("bento", metadata={"bento_tag": bento_tag}))


def _release(instance, store: BentoStore) -> dg.ExecuteInProcessResult:
    return dg.materialize([bento_release], resources={"bentos": store}, instance=instance)


@pytest.fixture(scope="module")
def built_bento(tmp_path_factory):
    """A real flight-delay Bento (a small trained unit, built by `serving.build` as the `bento` asset does)."""
    from ml.model import unit_digest
    from tests.serving_helpers import january_features, train_small_unit

    root = tmp_path_factory.mktemp("release")
    unit_dir, _ = train_small_unit(january_features(5), root)
    store = _store(root / "bentoml")
    built = store.build(unit_dir, unit_digest(unit_dir), "1", "0" * 32, "models:/flight_delay/1")
    return root, built.bento_tag


def test_release_names_follow_the_bento_tag():
    assert release_file_name("flight_delay_service:k3x9") == "flight_delay_service-k3x9.bento"
    assert image_reference("flight_delay_service:k3x9", None) == "flight_delay_service:k3x9"
    assert image_reference("flight_delay_service:k3x9", f"{REPOSITORY}/") == f"{REPOSITORY}:k3x9"
    with pytest.raises(ValueError, match="not a Bento tag"):
        release_file_name("latest")


def test_an_unsupported_export_scheme_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="only s3://bucket/prefix or a local folder"):
        _store(tmp_path, export_url="gs://bucket/bentos").export_destination()


def test_the_export_location_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTO_EXPORT_URL", "s3://bucket/bentos")
    monkeypatch.setenv("BENTO_IMAGE_REPOSITORY", REPOSITORY)
    store = _store(tmp_path)
    assert (store.export_url, store.image_repository) == ("s3://bucket/bentos", REPOSITORY)


def test_the_export_is_encrypted_as_the_lake_is_kms_key_included(tmp_path, monkeypatch):
    """A bare ``aws:kms`` would take the account's ``aws/s3`` key (or be refused by the bucket policy)."""
    monkeypatch.setenv("LAKE_SSE", "aws:kms")
    monkeypatch.setenv("LAKE_SSE_KMS_KEY_ID", "arn:aws:kms:eu-west-1:111122223333:key/lake")
    destination = _store(tmp_path, export_url="s3://bucket/bentos").export_destination()
    assert destination.settings().sse_arguments() == {
        "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:eu-west-1:111122223333:key/lake",
    }


def test_without_an_export_location_the_release_says_why_and_names_the_image(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    _record_verified(instance, "flight_delay_service:k3x9")
    result = _release(instance, _store(tmp_path, export_url=None, image_repository=None))
    metadata = result.asset_materializations_for_node("bento_release")[0].metadata
    assert metadata["exported"].value is False
    assert "BENTO_EXPORT_URL" in metadata["reason"].value
    assert metadata["image"].value == "flight_delay_service:k3x9"
    assert "export_uri" not in metadata


def test_without_a_verified_bento_nothing_is_released(tmp_path):
    result = dg.materialize([bento_release], resources={"bentos": _store(tmp_path)},
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    assert not result.asset_materializations_for_node("bento_release")


@pytest.mark.parametrize("parity_passed", [True, False])
def test_only_a_bento_that_passed_its_parity_check_is_released(tmp_path, parity_passed):
    """The release sits downstream of `bento`'s blocking check: a failed check stops it in the same run."""

    @dg.asset(name="bento", check_specs=[dg.AssetCheckSpec("serves_registry_predictions", asset="bento", blocking=True)])
    def checked_bento():
        yield dg.MaterializeResult(metadata={"bento_tag": "flight_delay_service:k3x9"})
        yield dg.AssetCheckResult(check_name="serves_registry_predictions", passed=parity_passed)

    assert bento.key == checked_bento.key
    result = dg.materialize([checked_bento, bento_release], resources={"bentos": _store(tmp_path, export_url=None)},
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert bool(result.asset_materializations_for_node("bento_release")) is parity_passed


def test_bento_job_releases_what_it_builds():
    from pipelines.definitions import defs

    job = defs.resolve_job_def("bento_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {"bento", "bento_release"}


@pytest.mark.slow
def test_the_verified_bento_is_exported_encrypted_and_imports_back(built_bento, s3_endpoint, monkeypatch, tmp_path):
    import boto3

    root, bento_tag = built_bento
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.delenv("LAKE_SSE", raising=False)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    instance = dg.DagsterInstance.ephemeral()
    _record_verified(instance, bento_tag)

    store = _store(root / "bentoml", export_url=f"s3://{BUCKET}/bentos", image_repository=REPOSITORY)
    result = _release(instance, store)
    metadata = result.asset_materializations_for_node("bento_release")[0].metadata

    key = f"bentos/{release_file_name(bento_tag)}"
    assert metadata["exported"].value is True
    assert metadata["export_uri"].value == f"s3://{BUCKET}/{key}"
    assert metadata["image"].value == f"{REPOSITORY}:{bento_tag.split(':')[1]}"
    assert [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="bentos/")["Contents"]] == [key]
    assert client.head_object(Bucket=BUCKET, Key=key)["ServerSideEncryption"] == "AES256"
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == metadata["sha256"].value
    assert metadata["size_bytes"].value == len(body) > 10_000

    archive = tmp_path / release_file_name(bento_tag)
    archive.write_bytes(body)
    elsewhere = _store(tmp_path / "elsewhere")
    bentoml = elsewhere._bentoml()
    subprocess.run([bentoml, "import", str(archive)], env=elsewhere.env(), check=True, capture_output=True, timeout=120)
    listed = subprocess.run([bentoml, "list", "-o", "json"], env=elsewhere.env(), check=True,
                            capture_output=True, text=True, timeout=120).stdout
    assert bento_tag in listed
