"""deploy/terraform, read as data (python-hcl2): the lake bucket's protections and the least-privilege policies.

No AWS account is reachable from here: what is checked is what the files declare, plus `terraform fmt`
and `terraform validate` against the provider's schema where terraform and a provider mirror exist.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

TERRAFORM = Path(__file__).resolve().parents[1] / "deploy" / "terraform"
PROVIDER_MIRROR = Path("/opt/tf-plugins")  # a local copy of registry.terraform.io; none in CI
KMS_DATA_ACTIONS = {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"}
HELM_VALUES_FILES = [("values.yaml",), ("values.yaml", "values-gpu.yaml")]
SSE_KEY = "s3:x-amz-server-side-encryption"
SSE_KMS_KEY_ID_KEY = "s3:x-amz-server-side-encryption-aws-kms-key-id"
LAKE_KEY_ARN = "${aws_kms_key.lake.arn}"  # the lake key as the policy names it; a put naming it sends this value
BOTO_SSE_ARGUMENTS = {"ServerSideEncryption": SSE_KEY, "SSEKMSKeyId": SSE_KMS_KEY_ID_KEY}


def _load(path: Path) -> dict:
    """One .tf file as plain data.

    python-hcl2 8 keeps string quotes and marks blocks (`__is_block__`) unless told otherwise;
    7.x returned plain values already.
    """
    import hcl2

    with open(path) as handle:
        if hasattr(hcl2, "SerializationOptions"):
            options = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
            return hcl2.load(handle, serialization_options=options)
        return hcl2.load(handle)


@pytest.fixture(scope="module")
def tf() -> dict:
    """Every block of the configuration, merged across files: {"resource": {type: {name: body}}, ...}."""
    merged: dict = {"resource": {}, "data": {}, "variable": {}, "output": {}, "terraform": [], "locals": [], "provider": []}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for kind, blocks in _load(path).items():
            for block in blocks:
                if kind in ("resource", "data"):
                    for type_, named in block.items():
                        merged[kind].setdefault(type_, {}).update(named)
                elif kind in ("variable", "output"):
                    merged[kind].update(block)
                else:
                    merged[kind].append(block)
    return merged


def _resource(tf: dict, type_: str, name: str = "lake") -> dict:
    return tf["resource"][type_][name]


def _statements(tf: dict, document: str) -> dict[str, dict]:
    return {s["sid"]: s for s in tf["data"]["aws_iam_policy_document"][document]["statement"]}


def _render(tf: dict, expression: str, bucket: str) -> str:
    """A Terraform string with the bucket's id and the variables' defaults substituted (what an apply outputs)."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        return bucket if name == "aws_s3_bucket.lake.id" else str(tf["variable"][name.removeprefix("var.")]["default"])

    rendered = re.sub(r"\$\{(aws_s3_bucket\.lake\.id|var\.\w+)\}", value, expression)
    assert "${" not in rendered, rendered
    return rendered


def _condition_holds(condition: dict, request: dict[str, str]) -> bool:
    """One IAM condition on a request's context keys, per AWS's condition-operator reference.

    A negated operator (StringNotEquals) is true when the key is absent, as is any `...IfExists`;
    `Null` "true" means the key is absent. Operators our policies don't use fail the test.
    """
    test, key, values = condition["test"], condition["variable"], condition["values"]
    if test == "Null":
        return (key not in request) == (values == ["true"])
    if_exists = test.endswith("IfExists")
    operator = test.removesuffix("IfExists")
    if key not in request:
        return if_exists or operator == "StringNotEquals"
    if operator in ("StringEquals", "Bool"):
        return request[key] in values
    if operator == "StringNotEquals":
        return request[key] not in values
    raise AssertionError(f"no evaluator for the condition operator {test}")


def _put_denied_by(tf: dict, request: dict[str, str]) -> list[str]:
    """The bucket policy's Deny statements that refuse a TLS PutObject with these SSE context keys."""
    request = {"aws:SecureTransport": "true", **request}
    return [
        sid for sid, statement in _statements(tf, "lake_bucket").items()
        if statement["effect"] == "Deny" and {"s3:*", "s3:PutObject"} & set(statement["actions"])
        and all(_condition_holds(c, request) for c in statement["condition"])
    ]


def _helm_values(*names: str) -> dict:
    from tests.k8s import chart

    return chart.load_values(*names)


def _compute_logs(values: dict) -> dict:
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    return values["computeLogManager"]["config"]["s3ComputeLogManager"]


def test_the_aws_provider_is_pinned(tf):
    (providers,) = [b["required_providers"] for b in tf["terraform"] if "required_providers" in b]
    aws = providers[0]["aws"]
    assert aws["source"] == "hashicorp/aws"
    assert aws["version"].startswith("~>"), "a pessimistic pin: minor upgrades only"
    assert any("required_version" in b for b in tf["terraform"])


def test_objects_are_encrypted_with_a_rotating_kms_key(tf):
    key = _resource(tf, "aws_kms_key")
    assert key["enable_key_rotation"] is True
    assert key["deletion_window_in_days"] == "${var.kms_deletion_window_days}"
    (rule,) = _resource(tf, "aws_s3_bucket_server_side_encryption_configuration")["rule"]
    (default,) = rule["apply_server_side_encryption_by_default"]
    assert default == {"sse_algorithm": "aws:kms", "kms_master_key_id": "${aws_kms_key.lake.arn}"}
    assert rule["bucket_key_enabled"] is True


def test_the_bucket_is_versioned_private_and_owner_enforced(tf):
    (versioning,) = _resource(tf, "aws_s3_bucket_versioning")["versioning_configuration"]
    assert versioning["status"] == "Enabled"
    block = _resource(tf, "aws_s3_bucket_public_access_block")
    assert all(block[k] is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                                           "restrict_public_buckets"))
    (ownership,) = _resource(tf, "aws_s3_bucket_ownership_controls")["rule"]
    assert ownership["object_ownership"] == "BucketOwnerEnforced"
    for type_ in ("aws_s3_bucket_versioning", "aws_s3_bucket_public_access_block", "aws_s3_bucket_ownership_controls",
                  "aws_s3_bucket_server_side_encryption_configuration", "aws_s3_bucket_lifecycle_configuration",
                  "aws_s3_bucket_policy"):
        assert _resource(tf, type_)["bucket"] == "${aws_s3_bucket.lake.id}", type_


def test_lifecycle_expires_quarantine_monitoring_old_versions_and_abandoned_uploads(tf):
    lifecycle = _resource(tf, "aws_s3_bucket_lifecycle_configuration")
    rules = {r["id"]: r for r in lifecycle["rule"]}
    assert len(rules) == len(lifecycle["rule"]) and all(r["status"] == "Enabled" for r in rules.values())
    by_prefix = {r["filter"][0].get("prefix"): r for r in rules.values()}
    for prefix, days in (("quarantine", "quarantine_retention_days"), ("monitoring", "monitoring_retention_days"),
                         ("staging", "staging_retention_days")):
        rule = by_prefix["${var.lake_prefix}/%s/" % prefix]
        assert rule["expiration"][0]["days"] == "${var.%s}" % days
    assert tf["variable"]["staging_retention_days"]["default"] <= 7, "a killed training run's staged files go soon"
    noncurrent = [r for r in rules.values() if "noncurrent_version_expiration" in r]
    assert noncurrent and noncurrent[0]["filter"] == [{}], "old versions expire bucket-wide"
    multipart = [r for r in rules.values() if "abort_incomplete_multipart_upload" in r]
    assert multipart and multipart[0]["filter"] == [{}]
    assert lifecycle["depends_on"] == ["${aws_s3_bucket_versioning.lake}"]


def test_every_encryption_deny_is_limited_to_a_header_that_is_present(tf):
    """`StringNotEquals` + `Null = false` on the same key, never `...IfExists` (true when the key is absent)."""
    statements = _statements(tf, "lake_bucket")
    for sid in ("DenyEncryptionOtherThanKms", "DenyOtherKmsKeys"):
        conditions = statements[sid]["condition"]
        (negated,) = [c for c in conditions if c["test"] == "StringNotEquals"]
        assert {"test": "Null", "variable": negated["variable"], "values": ["false"]} in conditions, sid
    assert not any(c["test"].endswith("IfExists") for s in statements.values() for c in s.get("condition", []))


@pytest.mark.parametrize(("request_keys", "denied"), [
    ({}, False),  # LAKE_SSE=none: the bucket default (the lake's key) applies
    ({SSE_KEY: "aws:kms", SSE_KMS_KEY_ID_KEY: LAKE_KEY_ARN}, False),  # LAKE_SSE=aws:kms + LAKE_SSE_KMS_KEY_ID
    ({SSE_KEY: "AES256"}, True),  # the code's default: SSE-S3, not the lake's key
    ({SSE_KEY: "aws:kms", SSE_KMS_KEY_ID_KEY: "arn:aws:kms:eu-west-1:111122223333:key/other"}, True),
    ({SSE_KEY: "aws:kms"}, True),  # a bare aws:kms selects the AWS-managed aws/s3 key
    ({SSE_KEY: "aws:kms:dsse", SSE_KMS_KEY_ID_KEY: LAKE_KEY_ARN}, True),
], ids=["no-header", "the-lake-key", "AES256", "another-key", "bare-aws-kms", "dsse"])
def test_the_bucket_policy_allows_a_put_without_sse_headers_and_refuses_wrong_ones(tf, request_keys, denied):
    assert bool(_put_denied_by(tf, request_keys)) is denied, _put_denied_by(tf, request_keys)


def test_the_bucket_policy_refuses_plain_http_and_other_encryption(tf):
    statements = _statements(tf, "lake_bucket")
    tls = statements["DenyInsecureTransport"]
    assert tls["effect"] == "Deny" and tls["actions"] == ["s3:*"]
    assert set(tls["resources"]) == {"${aws_s3_bucket.lake.arn}", "${aws_s3_bucket.lake.arn}/*"}
    assert tls["condition"] == [{"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}]
    assert tls["principals"] == [{"type": "*", "identifiers": ["*"]}]
    assert all(s["effect"] == "Deny" for s in statements.values())
    assert _resource(tf, "aws_s3_bucket_policy")["policy"] == "${data.aws_iam_policy_document.lake_bucket.json}"


@pytest.mark.parametrize("document", ["code", "serving"])
def test_iam_policies_grant_named_actions_on_named_resources_only(tf, document):
    for statement in _statements(tf, document).values():
        assert statement.get("effect", "Allow") == "Allow"
        assert not any("*" in action for action in statement["actions"]), statement["sid"]
        resources = statement["resources"]
        resources = [resources] if isinstance(resources, str) else resources  # a `for` expression stays a string
        assert resources and not any(r in ("*", "${aws_s3_bucket.lake.arn}/*") for r in resources), statement["sid"]
    kms = _statements(tf, document)["UseTheLakeKey"]
    (locals_,) = tf["locals"]
    assert kms["actions"] == "${local.kms_data_actions}" and set(locals_["kms_data_actions"]) == KMS_DATA_ACTIONS
    assert kms["resources"] == ["${aws_kms_key.lake.arn}"]


def test_the_code_policy_covers_exactly_the_prefixes_the_code_writes(tf, monkeypatch):
    """Each prefix from where the code (or the Helm values, for Dagster's compute logs) names it."""
    from infra import settings
    from ml.landing import landing_key
    from resources.parquet_io import WAREHOUSE_PREFIX
    from resources.storage import LakeArea
    from serving.prediction_log import PREDICTIONS_PREFIX

    values = _helm_values("values.yaml")
    bucket = _compute_logs(values)["bucket"]
    lake_url = _render(tf, tf["output"]["lake_url"]["value"], bucket)
    monkeypatch.setenv("LAKE_URL", lake_url)
    monkeypatch.delenv("TRAINING_STAGING_URL", raising=False)
    monkeypatch.delenv("PREDICTION_LOG_URL", raising=False)

    def under_the_lake(url: str) -> str:
        assert url.startswith(lake_url + "/"), url
        return url.removeprefix(lake_url + "/").split("/")[0]

    compute_logs = _compute_logs(values)["prefix"].split("/")
    assert compute_logs[0] == tf["variable"]["lake_prefix"]["default"], "compute logs live under the lake"
    used = {*(area.value.split("/")[0] for area in LakeArea), landing_key("flights", "2013-01-01").split("/")[0],
            WAREHOUSE_PREFIX, PREDICTIONS_PREFIX, under_the_lake(settings.prediction_log().url),
            under_the_lake(settings.training().staging_url), compute_logs[1]}
    assert set(tf["variable"]["code_prefixes"]["default"]) == used
    (locals_,) = tf["locals"]
    assert "var.code_prefixes" in locals_["code_object_prefixes"] and "var.bento_release_prefix" in locals_["code_object_prefixes"]
    statements = _statements(tf, "code")
    assert statements["ListOnlyOwnPrefixes"]["condition"][0]["variable"] == "s3:prefix"
    assert "local.code_object_prefixes" in statements["ReadWriteOwnPrefixes"]["resources"]
    serving = _statements(tf, "serving")["WritePredictionLog"]
    assert serving["actions"] == ["s3:PutObject", "s3:AbortMultipartUpload"]
    assert serving["resources"] == ["${aws_s3_bucket.lake.arn}/${var.lake_prefix}/predictions/*"]


def test_the_serving_config_writes_where_terraform_lets_it(tf):
    import yaml

    config = yaml.safe_load((TERRAFORM.parent / "k8s" / "serving" / "base" / "configmap.yaml").read_text())
    log_url = config["data"]["PREDICTION_LOG_URL"]
    assert log_url.split("/", 3)[3] == f"{tf['variable']['lake_prefix']['default']}/predictions"


@pytest.mark.parametrize("files", HELM_VALUES_FILES, ids=lambda files: "+".join(files))
def test_the_helm_values_use_the_terraform_outputs_and_prefixes(tf, files):
    from tests.k8s import chart

    values = _helm_values(*files)
    env = chart.deployment_env(values)
    logs = _compute_logs(values)
    bucket = logs["bucket"]
    assert env["LAKE_URL"] == _render(tf, tf["output"]["lake_url"]["value"], bucket)
    assert env["BENTO_EXPORT_URL"] == _render(tf, tf["output"]["bento_export_url"]["value"], bucket)
    (locals_,) = tf["locals"]
    assert "${var.lake_prefix}/${p}" in locals_["code_object_prefixes"], "the code's prefixes are under the lake"
    code_prefixes = [f"{tf['variable']['lake_prefix']['default']}/{p}" for p in tf["variable"]["code_prefixes"]["default"]]
    prefix = logs["prefix"].strip("/")
    assert any(prefix == p or prefix.startswith(p + "/") for p in code_prefixes), (prefix, code_prefixes)
    assert logs["region"] == env["AWS_REGION"]


@pytest.mark.parametrize("files", HELM_VALUES_FILES, ids=lambda files: "+".join(files))
def test_no_helm_value_asks_for_an_encryption_the_bucket_policy_denies(tf, files, monkeypatch):
    """The lake's puts (LakeSettings from the deployment's env) and the compute-log uploads both pass."""
    from infra import settings
    from tests.k8s import chart

    values = _helm_values(*files)
    env = chart.deployment_env(values)
    for name in ("LAKE_SSE", "LAKE_SSE_KMS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if settings.lake().sse == "aws:kms":
        # the key ARN would come from flight-delays-secrets, which is the Terraform kms_key_arn output
        monkeypatch.setenv("LAKE_SSE_KMS_KEY_ID", settings.lake().sse_kms_key_id or LAKE_KEY_ARN)
    lake_put = settings.lake().sse_arguments()
    log_put = _compute_logs(values).get("uploadExtraArgs") or {}
    for arguments in (lake_put, log_put):
        request = {BOTO_SSE_ARGUMENTS[k]: v for k, v in arguments.items() if k in BOTO_SSE_ARGUMENTS}
        assert _put_denied_by(tf, request) == [], arguments


def test_variables_and_outputs_are_described(tf):
    assert all(v.get("description") and v.get("type") for v in tf["variable"].values())
    assert all(o.get("description") for o in tf["output"].values())
    assert {"lake_url", "bento_export_url", "kms_key_arn", "code_policy_arn", "serving_policy_arn"} <= set(tf["output"])


def test_no_credentials_in_the_configuration():
    text = "\n".join(p.read_text() for p in TERRAFORM.glob("*.tf"))
    assert not any(word in text for word in ("access_key", "secret_key", "AKIA"))


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform not installed: `terraform fmt -check` skipped")
def test_terraform_fmt_is_clean():
    done = subprocess.run(["terraform", "fmt", "-check", "-diff", str(TERRAFORM)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


@pytest.mark.skipif(shutil.which("terraform") is None or not PROVIDER_MIRROR.is_dir(),
                    reason="terraform or a local provider mirror missing: `terraform validate` needs the provider schema")
def test_terraform_validate_against_the_provider_schema(tmp_path):
    work = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, work, ignore=shutil.ignore_patterns(".terraform*"))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1",
           "TF_CLI_CONFIG_FILE": "/dev/null", "HOME": str(tmp_path)}
    init = subprocess.run(["terraform", "init", "-backend=false", "-input=false", f"-plugin-dir={PROVIDER_MIRROR}"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    if init.returncode != 0 and "no available releases match" in init.stderr:
        pytest.skip(f"the provider mirror has no version matching versions.tf: {init.stderr[-300:]}")
    assert init.returncode == 0, init.stderr
    done = subprocess.run(["terraform", "validate", "-no-color"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
