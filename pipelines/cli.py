"""``flightdelay``: the project's one command line.

Each subcommand is a module of ``pipelines/`` with its own ``main(argv)`` and argparse options
(``flightdelay replay --help``); this group only names them, so ``flightdelay --help`` starts in
well under a second and a subcommand imports what it needs. ``python -m pipelines.<module>`` still
works for scripts written before.
"""

from __future__ import annotations

import importlib
import sys

import click

#: subcommand → (module with ``main(argv)``, one line of help).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipelines.run_main", "Replay Jan–Mar 2013 and run the chain: ingest, features, training, champion, Bento, batch scores."),
    "replay": ("pipelines.replay", "Drop real 2013 days into the landing zone, as producers would deliver them."),
    "check-data": ("pipelines.check_data", "Materialize a sample of days and run their asset checks; exit 1 when one fails."),
    "demo": ("pipelines.demo", "Replay summer 2013 day by day with the daemon running: drift, retraining, new champions."),
    "stack": ("pipelines.stack", "The production stack on this machine: up, down, status, restart, services."),
    "verified-bento": ("pipelines.verified_bento", "Print the tag of the newest Bento whose parity check passed."),
    "audit-trail": ("pipelines.audit_trail", "A model version's life from the audit log."),
    "importance-drift": ("pipelines.importance_drift", "The champions' feature-group importance side by side."),
    "stream-replay": ("streaming.replay", "Publish 2013 days to the airport stream (NATS JetStream), N× real time or max."),
    "stream-process": ("streaming.processor", "The stream processor: live state, a prediction at every flight's cutoff."),
    "stream-demo": ("streaming.demo", "Watch a day stream in: embedded broker, processor, replay at 600×, predictions live."),
    "metrics-exporter": ("pipelines.metrics_exporter", "Serve the pipeline's Prometheus metrics from the Dagster instance."),
}

EXIT_CODES = """\b
Exit codes:
  0  done, every run and check passed
  1  a run failed, a blocking check held data back, or nothing was found to act on (the message says which)
  2  the command line was wrong (unknown option, bad date)"""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
def cli() -> None:
    """Flight-delay pipelines: landing files → features → model → registry → service → monitoring.

    Each command takes --help for its own options.
    """


def _forwarding_command(name: str, module: str, summary: str) -> click.Command:
    @click.command(
        name,
        help=summary,
        short_help=summary,
        add_help_option=False,  # the module's own parser answers --help
        context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        code = importlib.import_module(module).main(list(args))
        sys.exit(code or 0)

    return command


for _name, (_module, _summary) in COMMANDS.items():
    cli.add_command(_forwarding_command(_name, _module, _summary))


if __name__ == "__main__":
    cli()
