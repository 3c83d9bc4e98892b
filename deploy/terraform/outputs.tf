output "bucket_name" {
  description = "The lake bucket."
  value       = aws_s3_bucket.lake.id
}

output "bucket_arn" {
  description = "ARN of the lake bucket."
  value       = aws_s3_bucket.lake.arn
}

output "kms_key_arn" {
  description = "The KMS key every object of the bucket is encrypted with."
  value       = aws_kms_key.lake.arn
}

output "lake_url" {
  description = "LAKE_URL for the pipeline code and PREDICTION_LOG_URL's parent."
  value       = "s3://${aws_s3_bucket.lake.id}/${var.lake_prefix}"
}

output "bento_export_url" {
  description = "BENTO_EXPORT_URL: where bento_release exports verified Bentos."
  value       = "s3://${aws_s3_bucket.lake.id}/${var.bento_release_prefix}"
}

output "code_policy_arn" {
  description = "Attach to the role of the Dagster code server and run workers."
  value       = aws_iam_policy.code.arn
}

output "serving_policy_arn" {
  description = "Attach to the role of the served Bento's service account."
  value       = aws_iam_policy.serving.arn
}
