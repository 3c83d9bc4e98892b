"""MLflow pyfunc flavour of the delay model, logged as "models from code" (nothing pickled).

Only MLflow loads this file (never the code location); `load_context` reads the saved unit
(state_dict + JSON) from the model's artifacts with `torch.load(weights_only=True)`.
"""


def _pyfunc_model():
    import mlflow.pyfunc

    class DelayModelPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            from ml.model import ModelUnit

            self.unit = ModelUnit.load(context.artifacts["unit"])

        def predict(self, context, model_input, params=None):
            import pandas as pd

            return pd.Series(self.unit.predict_proba(model_input), name="delay_probability")

    return DelayModelPyfunc()


def _declare() -> None:
    from mlflow.models import set_model

    set_model(_pyfunc_model())


_declare()
