"""``precog worker``: run the streaming agents of a namespace."""

from __future__ import annotations

import typer

from precog.errors import ConfigError
from precog.settings import get_settings

app = typer.Typer(help="Run the streaming worker (score, index, join, monitor agents).")


@app.callback(invoke_without_command=True)
def worker(
    agents: str = typer.Option(
        "control,score,index,join,monitor,lifecycle", help="comma-separated agents to run"
    ),
    loglevel: str = typer.Option("info", help="debug | info | warning | error"),
) -> None:
    """Run until interrupted; /health and /metrics on PRECOG_WORKER_WEB_PORT (6066)."""
    from precog.services.worker import AGENTS, agent_names, run

    chosen = agent_names(agents.split(","))
    if not chosen:  # a worker with no agents would run forever doing nothing
        raise ConfigError(f"--agents {agents!r} names no agent: give at least one of"
                          f" {', '.join(AGENTS)}")
    if loglevel not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"bad --loglevel {loglevel!r}")
    settings = get_settings()
    run(settings, chosen, loglevel)
