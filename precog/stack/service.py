"""One service of one stack home, for fault tests: its pid, stop (or crash) it, signal, start."""

from __future__ import annotations

import contextlib
import os
import signal

from precog.errors import StackError
from precog.io.health import address
from precog.settings import Settings
from precog.stack.layout import Echo, Layout, echo_line, one_service
from precog.stack.lifecycle import locked, up
from precog.stack.processes import owned_pid, stop_group


def service_pid(settings: Settings, name: str) -> int | None:
    """The pid of ``name`` (kafka, elasticsearch, redis) started from this stack home, or None.

    It leads the service's process group: for Elasticsearch as root that is ``runuser``,
    with the JVMs in the same group. A service that is external, shared or down has none.
    """
    return owned_pid(Layout.from_settings(settings).pid_file(one_service(name)))


def start_service(settings: Settings, name: str, *, echo: Echo = echo_line) -> int:
    """Start ``name`` from this stack home unless it runs, wait until healthy; its pid."""
    up(settings, echo=echo, only=(one_service(name),))
    pid = service_pid(settings, name)
    if pid is None:
        raise StackError(f"{name} answers at {address(settings, name)} but was not started from"
                         f" {Layout.from_settings(settings).home} (external or shared)")
    return pid


def stop_service(settings: Settings, name: str, sig: int = signal.SIGTERM, *,
                 timeout: float = 60.0, echo: Echo = echo_line) -> int | None:
    """Send ``sig`` to ``name``'s process group and wait until it is gone; the pid it had.

    ``signal.SIGKILL`` is a crash (nothing flushed or saved on the way out); SIGTERM a clean
    stop, turned into SIGKILL after ``timeout`` s. None when it was not running from this
    stack home; nothing else is ever signalled.
    """
    layout = Layout.from_settings(settings)
    with locked(layout, echo):
        pid = service_pid(settings, name)
        if pid is None:
            return None
        stop_group(pid, timeout, sig)
        layout.pid_file(name).unlink(missing_ok=True)
    return pid


def signal_service(settings: Settings, name: str, sig: int) -> int | None:
    """Send ``sig`` to ``name``'s process group without waiting (SIGSTOP/SIGCONT: a hang)."""
    pid = service_pid(settings, name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
    return pid
