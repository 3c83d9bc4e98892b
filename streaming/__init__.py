"""The stream processor: the airport's day as JetStream events, live state in Redis, a prediction at every cutoff.

Dagster-free, like ``serving/``: it runs as a long-lived service and Dagster only observes it.
"""
