"""The stored tables, by name: one typed key per table the pipeline writes and reads.

Each value is also the Dagster asset that materializes the table and the warehouse folder it is
kept in, so a table is addressed as ``Table.FLIGHT_FEATURES`` everywhere, never as a string.
"""

from enum import StrEnum


class Table(StrEnum):
    RAW_FLIGHTS = "raw_flights"
    RAW_WEATHER = "raw_weather"
    PLANES = "planes"
    AIRPORTS = "airports"
    LATE_HISTORY = "late_history"
    FLIGHT_FEATURES = "flight_features"
    TRAINING_SET = "training_set"


RAW_UPSTREAMS = (Table.RAW_FLIGHTS, Table.RAW_WEATHER)
"""The daily tables features are built from; their stored versions are recorded with each day."""
