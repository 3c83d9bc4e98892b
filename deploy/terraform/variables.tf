variable "region" {
  description = "AWS region of the lake bucket and its KMS key."
  type        = string
}

variable "bucket_name" {
  description = "Name of the lake bucket (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 lowercase letters, digits, dots or hyphens."
  }
}

variable "lake_prefix" {
  description = "Prefix of the lake inside the bucket: LAKE_URL is s3://<bucket>/<lake_prefix>."
  type        = string
  default     = "lake"
}

variable "code_prefixes" {
  description = "Prefixes under the lake that the pipeline code reads and writes: its storage users, the trainer's staging (TRAINING_STAGING_URL) and Dagster's compute logs (deploy/helm)."
  type        = list(string)
  default     = ["landing", "quarantine", "warehouse", "predictions", "monitoring", "staging", "compute-logs"]
}

variable "bento_release_prefix" {
  description = "Prefix of exported Bentos: BENTO_EXPORT_URL is s3://<bucket>/<bento_release_prefix>."
  type        = string
  default     = "releases/bentos"
}

variable "quarantine_retention_days" {
  description = "Days a quarantined landing file and its report are kept."
  type        = number
  default     = 90
}

variable "monitoring_retention_days" {
  description = "Days drift reports and other monitoring output are kept."
  type        = number
  default     = 365
}

variable "staging_retention_days" {
  description = "Days a training run's staged window and unit are kept if the run did not remove them."
  type        = number
  default     = 7
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted object's previous version is kept (versioning is on)."
  type        = number
  default     = 30
}

variable "incomplete_multipart_upload_days" {
  description = "Days after which the parts of an unfinished multipart upload are removed."
  type        = number
  default     = 7
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the lake's KMS key is deleted once scheduled for deletion."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { project = "flight-delay" }
}
