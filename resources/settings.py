"""Moved to ``ml/settings.py`` (Dagster-free, so ``serving/`` reads it too); kept for older imports."""

from ml.settings import *  # noqa: F401,F403
from ml.settings import PROJECT_ROOT, SECRET_VARIABLES  # noqa: F401
