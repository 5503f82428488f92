"""How each service of a stack is doing: the rows of ``precog stack status``, waiting for health.

The checks themselves are :mod:`precog.io.health`'s (shared with the worker's preflight).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from precog.errors import StackError
from precog.io.health import address, healthy
from precog.settings import Settings
from precog.stack.layout import SERVICES, Layout, local_ports
from precog.stack.processes import (
    group_rss_kib,
    owned_pid,
    port_holders,
    port_in_use,
    rss_kib,
    tail_lines,
)
from precog.stack.secure import with_stack_credentials


@dataclass
class ServiceStatus:
    """One service as ``status`` reports it."""

    name: str
    address: str
    #: "local" (ours), "external" (PRECOG_* given), "shared" (answering, not started here),
    #: "stopped"
    mode: str
    pid: int | None
    health: str | None  # None = healthy, else the reason
    logs: list[Path]
    rss_kib: int | None = None

    @property
    def healthy(self) -> bool:
        return self.health is None

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid else "-"
        rss = f"  rss {self.rss_kib // 1024} MiB" if self.rss_kib else ""
        state = "healthy" if self.healthy else f"DOWN ({self.health})"
        return f"{self.name:<15} {self.mode:<9} {pid:<11} {self.address:<26} {state}{rss}"


def service_status(settings: Settings, service: str, layout: Layout | None = None,
                   timeout: float = 5.0) -> ServiceStatus:
    """One row of ``status``: a pid only for what this home started or what holds the port."""
    layout = layout or Layout.from_settings(settings)
    pid = owned_pid(layout.pid_file(service))
    external = settings.stack_overridden()[service]
    mode = "external" if external else "local" if pid else "stopped"
    reason = healthy(settings, service, timeout)
    if mode == "stopped" and reason is None:
        mode = "shared"
        holders = port_holders(local_ports(settings, service)[0])
        pid = holders[0] if holders else None
    rss = group_rss_kib(pid) if pid and mode == "local" else (rss_kib(pid) if pid else None)
    return ServiceStatus(service, address(settings, service), mode, pid, reason,
                         layout.log_files(service), rss)


def status(settings: Settings | None = None,
           only: tuple[str, ...] = SERVICES) -> list[ServiceStatus]:
    """Every service (or those in ``only``): mode, pid, address, health, logs."""
    settings = with_stack_credentials(settings or Settings())
    layout = Layout.from_settings(settings)
    return [service_status(settings, s, layout) for s in only]


def wait_healthy(service: str, settings: Settings, layout: Layout, timeout: float,
                 proc: subprocess.Popen[bytes] | None) -> None:
    """Until ``service`` answers its health check; StackError if ``proc`` (the process just
    started, None for one that runs already) exits first or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    reason: str | None = "not checked"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            last = tail_lines(layout.stdout_log(service), 1) or ["(no output)"]
            raise StackError(f"{service} exited during start (code {proc.returncode}):"
                             f" {last[-1][:160]}; see {layout.stdout_log(service)}")
        ports_up = service not in ("kafka", "elasticsearch") or port_in_use(
            local_ports(settings, service)[0])
        if ports_up or proc is None:
            reason = healthy(settings, service, timeout=min(10.0, max(1.0, timeout / 4)))
            if reason is None:
                return
        time.sleep(1.0)
    hint = f"; see {layout.log_files(service)[0]}" if proc is not None else ""
    raise StackError(f"{service} not healthy after {timeout:.0f}s: {reason}{hint}")
