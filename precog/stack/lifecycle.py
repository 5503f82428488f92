"""``up``, ``down``, ``ensure`` and ``logs`` of a whole stack home, one command at a time."""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from precog.io.health import address, healthy
from precog.settings import Settings
from precog.stack.apicurio import install_apicurio, schema_registry_command
from precog.stack.configs import elasticsearch_command, kafka_command
from precog.stack.health import ServiceStatus, service_status, status, wait_healthy
from precog.stack.install import find_java_home
from precog.stack.layout import (
    SERVICES,
    Echo,
    Layout,
    echo_line,
    local_ports,
    parse_services,
)
from precog.stack.prepare import (
    ensure_redis_aof,
    prepare_elasticsearch,
    prepare_kafka,
    prepare_redis,
)
from precog.stack.processes import (
    describe_pid,
    ensure_ports_free,
    owned_pid,
    port_holders,
    port_in_use,
    spawn,
    stop_group,
    stop_strays,
    stray_pids,
    tail_lines,
)
from precog.stack.secure import ensure_credentials, ensure_tls, with_stack_credentials

START_TIMEOUTS = {"kafka": 120.0, "elasticsearch": 240.0, "redis": 30.0,
                  "schema-registry": 180.0}


@contextlib.contextmanager
def locked(layout: Layout, echo: Echo) -> Iterator[None]:
    """One stack command at a time per stack home (several engineers share a checkout)."""
    layout.home.mkdir(parents=True, exist_ok=True)
    with (layout.home / "stack.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo("waiting for another 'precog stack' command to finish ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _start(service: str, settings: Settings, layout: Layout, echo: Echo,
           java: Callable[[], Path]) -> subprocess.Popen[bytes]:
    """Install what is missing and launch one service (no waiting)."""
    ensure_ports_free(service, local_ports(settings, service))
    creds = ensure_credentials(layout) if settings.stack.secure else None
    if creds is not None:
        ensure_tls(layout, echo)
    if service == "kafka":
        java_home = java()
        prepare_kafka(settings, layout, java_home, echo, creds)
        cmd, env, cwd = kafka_command(layout, java_home, settings.stack.kafka_heap), None, None
    elif service == "elasticsearch":
        java_home = java()
        user = prepare_elasticsearch(layout, echo, java_home, creds)
        cmd = elasticsearch_command(layout, java_home, settings.stack.elasticsearch_heap, user,
                                    *settings.stack.ports("elasticsearch"),
                                    secure=creds is not None)
        env, cwd = None, layout.dir("elasticsearch")
    elif service == "schema-registry":
        java_home = java()
        install_apicurio(layout, echo)
        for d in (layout.dir(service) / "data", layout.logs(service)):
            d.mkdir(parents=True, exist_ok=True)
        cmd = schema_registry_command(layout, java_home, settings.stack.schema_registry_heap,
                                      settings.stack.schema_registry_port)
        env, cwd = None, layout.dir(service)
    else:
        cmd, env, cwd = prepare_redis(settings, layout, echo, creds), None, None
    proc = spawn(cmd, log=layout.stdout_log(service), pid_file=layout.pid_file(service),
                 marker=layout.marker(service), cwd=cwd, env=env)
    echo(f"{service}: started pid {proc.pid}; logs: {layout.log_files(service)[0]}")
    return proc


def up(settings: Settings | None = None, *, echo: Echo = echo_line,
       timeouts: dict[str, float] | None = None,
       only: tuple[str, ...] = SERVICES) -> list[ServiceStatus]:
    """Start what is not running, wait until every service is healthy, report them.

    Idempotent: a healthy service from our pid file is left alone; a healthy service on the
    address that another stack started is used as it is; a port held by anything else fails.
    ``only`` limits all of it to some services (``precog stack up --only redis,kafka``).
    """
    settings = settings or Settings()
    layout = Layout.from_settings(settings)
    timeouts = {**START_TIMEOUTS, **(timeouts or {})}
    overridden = settings.stack_overridden()
    t0 = time.monotonic()
    java_home: list[Path] = []

    def java() -> Path:
        if not java_home:
            java_home.append(find_java_home())
            echo(f"java: {java_home[0]}")
        return java_home[0]

    with locked(layout, echo):
        echo(f"stack home: {layout.home}   cache: {layout.cache}")
        if settings.stack.secure:
            ensure_credentials(layout)
            ensure_tls(layout, echo)
            settings = with_stack_credentials(settings)
            echo(f"secure: SASL_SSL/TLS and passwords on; credentials in"
                 f" {layout.credentials_file} (mode 0600)")
        started: dict[str, subprocess.Popen[bytes] | None] = {}
        for service in only:
            addr = address(settings, service)
            if overridden[service]:
                echo(f"{service}: external at {addr} (given by PRECOG_*), not starting it")
                started[service] = None
                continue
            pid = owned_pid(layout.pid_file(service))
            if pid:
                echo(f"{service}: already running (pid {pid}) at {addr}")
                started[service] = None
                continue
            layout.pid_file(service).unlink(missing_ok=True)
            main_port = local_ports(settings, service)[0]
            if port_in_use(main_port) and healthy(settings, service) is None:
                holders = port_holders(main_port)
                who = describe_pid(holders[0]) if holders else "unknown process"
                echo(f"{service}: a healthy {service} already answers at {addr} ({who});"
                     " using it (not started here, 'down' leaves it alone)")
                started[service] = None
                continue
            echo(f"{service}: starting at {addr}")
            started[service] = _start(service, settings, layout, echo, java)
        for service, proc in started.items():
            echo(f"{service}: waiting for health ...")
            t1 = time.monotonic()
            # an external or shared service is not starting up: do not wait for it as long
            limit = timeouts[service] if proc is not None else min(timeouts[service], 30.0)
            wait_healthy(service, settings, layout, limit, proc)
            if service == "redis" and proc is not None:
                ensure_redis_aof(settings, echo)
            echo(f"{service}: healthy ({time.monotonic() - t1:.1f}s)")
    echo(f"stack up in {time.monotonic() - t0:.1f}s")
    return status(settings, only)


def ensure(settings: Settings | None = None, *, echo: Echo = echo_line) -> list[ServiceStatus]:
    """Services that already answer are used as they are; anything else goes through ``up``."""
    settings = with_stack_credentials(settings or Settings())
    current = [service_status(settings, s) for s in SERVICES]
    if all(st.healthy for st in current):
        return current
    return up(settings, echo=echo)


def down(settings: Settings | None = None, *, echo: Echo = echo_line,
         timeout: float = 60.0, only: tuple[str, ...] = SERVICES) -> list[str]:
    """Stop the services this stack home started (and only those); returns their names."""
    settings = settings or Settings()
    layout = Layout.from_settings(settings)
    stopped = []
    with locked(layout, echo):
        for service in reversed(only):
            pid_file = layout.pid_file(service)
            pid = owned_pid(pid_file)
            if pid:
                echo(f"{service}: stopping pid {pid} (TERM, KILL after {timeout:.0f}s)")
                if stop_group(pid, timeout):
                    echo(f"{service}: did not stop in time, killed")
                stopped.append(service)
            strays = stray_pids(layout.marker(service))
            for stray in strays:
                echo(f"{service}: stopping leftover {describe_pid(stray)}")
            stop_strays(strays, timeout)
            if not pid and not strays:
                echo(f"{service}: not running from this stack")
            pid_file.unlink(missing_ok=True)
    return stopped


def logs(settings: Settings | None = None, service: str | None = None,
         lines: int = 50) -> dict[Path, list[str]]:
    """The last ``lines`` lines of each log file of ``service`` (or of every service)."""
    settings = settings or Settings()
    layout = Layout.from_settings(settings)
    names = parse_services(service)
    return {p: tail_lines(p, lines) for n in names for p in layout.log_files(n)}
