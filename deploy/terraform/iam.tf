# Least-privilege policies: attach `code` to the role the Dagster code (code server, runs) assumes,
# `serving` to the one the served Bento assumes (IRSA on deploy/k8s/serving's service account).

locals {
  code_object_prefixes = concat(
    [for p in var.code_prefixes : "${var.lake_prefix}/${p}"],
    [var.bento_release_prefix],
  )
  kms_data_actions = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
}

data "aws_iam_policy_document" "code" {
  statement {
    sid       = "ListOnlyOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = flatten([for p in local.code_object_prefixes : [p, "${p}/*"]])
    }
  }

  # LakeStorage records whether old versions are kept in every write's metadata.
  statement {
    sid       = "ReadBucketVersioning"
    actions   = ["s3:GetBucketVersioning"]
    resources = [aws_s3_bucket.lake.arn]
  }

  statement {
    sid       = "ReadWriteOwnPrefixes"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [for p in local.code_object_prefixes : "${aws_s3_bucket.lake.arn}/${p}/*"]
  }

  statement {
    sid       = "UseTheLakeKey"
    actions   = local.kms_data_actions
    resources = [aws_kms_key.lake.arn]
  }
}

resource "aws_iam_policy" "code" {
  name        = "${var.bucket_name}-code"
  description = "The flight-delay pipeline code: its prefixes of the lake bucket and the lake's KMS key."
  policy      = data.aws_iam_policy_document.code.json
}

data "aws_iam_policy_document" "serving" {
  # The service only appends to the prediction log.
  statement {
    sid       = "WritePredictionLog"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.lake.arn}/${var.lake_prefix}/predictions/*"]
  }

  statement {
    sid       = "UseTheLakeKey"
    actions   = local.kms_data_actions
    resources = [aws_kms_key.lake.arn]
  }
}

resource "aws_iam_policy" "serving" {
  name        = "${var.bucket_name}-serving"
  description = "The served flight-delay Bento: writes its prediction log with the lake's KMS key."
  policy      = data.aws_iam_policy_document.serving.json
}
