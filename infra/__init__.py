"""The platform's plumbing, shared by every service: settings from the environment, structured logs,
the audit trail, redaction of secrets and the periodic flusher.

Kept out of `ml/`, which holds only the knowledge of the problem (features, model, evaluation).
"""
