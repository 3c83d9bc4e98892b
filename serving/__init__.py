"""Online and batch inference for the delay model. Imports `ml/`, never dagster or mlflow."""
