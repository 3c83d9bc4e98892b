"""Load the code location as a deployment would (this process's environment) and print, as JSON, each
launch path's job, the executor it resolves to, and the tags of every step it can run.

Run in a child process per environment: the op tags are read when the asset modules load, as they are
in a code server or run worker started with that environment.
"""

import json
import sys


def launch_paths() -> dict[str, dict]:
    import dagster as dg

    from pipelines.definitions import defs

    def describe(job) -> dict:
        return {
            "job": job.name,
            "executor": job.executor_def.name,
            # What the executor's init receives: the baked config, validated against its own schema.
            "executor_config": dg.validate_run_config(job, {})["execution"],
            "step_tags": {node.name: dict(node.tags) for node in job.graph.nodes},
        }

    asset_job = defs.resolve_implicit_global_asset_job_def()
    paths = {
        # A materialization or backfill from the UI, and declarative automation, run the implicit asset job.
        "ui materialization, backfill": describe(asset_job),
    }
    for sensor in defs.sensors:
        targets = [t.job_name for t in sensor.targets]
        if sensor.asset_selection is not None:
            paths[f"sensor {sensor.name}"] = describe(asset_job)
        for job_name in targets:
            paths[f"sensor {sensor.name}"] = describe(defs.resolve_job_def(job_name))
    for schedule in defs.schedules:
        paths[f"schedule {schedule.name}"] = describe(defs.resolve_job_def(schedule.job_name))
    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__"):
            paths[f"job {job.name}"] = describe(job)
    return paths


if __name__ == "__main__":
    paths = launch_paths()
    json.dump({"paths": paths, "dagster_k8s_imported": "dagster_k8s" in sys.modules}, sys.stdout)
