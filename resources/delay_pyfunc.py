"""MLflow pyfunc flavour of the delay model, logged as "models from code" (nothing pickled).

Only MLflow loads this file (never the code location, whose own paths load units through
`MlflowRegistry.load_unit` and never run registered code); `load_context` verifies the saved unit
against the digest logged with it and reads it (state_dict + JSON) with `torch.load(weights_only=True)`.
"""


def _pyfunc_model():
    import mlflow.pyfunc

    class DelayModelPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            from ml.model import ModelUnit

            digest = (context.model_config or {}).get("unit_sha256")
            if not digest:
                from ml.model import UnitIntegrityError

                raise UnitIntegrityError("this model was logged without unit_sha256 in its model_config; refused")
            self.unit = ModelUnit.load(context.artifacts["unit"], expected_digest=digest)

        def predict(self, context, model_input, params=None):
            import pandas as pd

            return pd.Series(self.unit.predict_proba(model_input), name="delay_probability")

    return DelayModelPyfunc()


def _declare() -> None:
    from mlflow.models import set_model

    set_model(_pyfunc_model())


_declare()
