import datetime as dt
import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

from pipelines.replay import replay  # noqa: E402
from resources.parquet_io import LakeParquetIOManager  # noqa: E402
from resources.storage import LakeStorage  # noqa: E402

FIRST_DAYS = (dt.date(2013, 1, 1), dt.date(2013, 1, 3))


@pytest.fixture
def lake(tmp_path) -> LakeStorage:
    """An empty local lake in a temp folder."""
    return LakeStorage(url=str(tmp_path / "lake"))


@pytest.fixture
def replayed_lake(lake) -> LakeStorage:
    """A local lake whose landing zone holds the real flights and weather of 2013-01-01..03."""
    replay(lake, *FIRST_DAYS)
    return lake


def resources_for(storage: LakeStorage) -> dict:
    return {"storage": storage, "io_manager": LakeParquetIOManager(storage=storage)}
