"""The stack's processes: pid files, which process is ours, process groups, ports (psutil)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from precog.errors import StackError

#: First words of the command lines the stack launches (java, runuser for ES, redis-server).
_SERVICE_PROGRAMS = ("java", "runuser", "env", "redis-server")

_CHILDREN: list[subprocess.Popen[bytes]] = []  # keeps handles so exit codes can be read


def cmdline(pid: int) -> str | None:
    """The command line of a live process, space-joined; None if gone or a zombie.

    >>> cmdline(os.getpid()) is not None
    True
    """
    try:
        args = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return None
    # a title set by the process itself (Redis's proc-title-template) may end in padding
    return " ".join(args).strip() or None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for pid in psutil.pids():
        # getpgid is one system call; the status only for the few in the group
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                members.append(pid)
    return members


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (``VmRSS``); None if it is gone."""
    try:
        return psutil.Process(pid).memory_info().rss // 1024
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def group_rss_kib(pgid: int) -> int:
    """Resident memory of a whole process group (Elasticsearch: launcher and server)."""
    return sum(rss_kib(p) or 0 for p in group_members(pgid))


def port_holders(port: int) -> list[int]:
    """Pids with a socket listening on TCP ``port`` (any address, IPv4 or IPv6), ascending.

    Sockets of processes we may not inspect (another user's, when not root) have no pid and
    are left out, as they were when this read ``/proc/<pid>/fd`` itself.
    """
    return sorted({
        conn.pid for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        and conn.pid is not None
    })


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def describe_pid(pid: int) -> str:
    cmd = cmdline(pid) or "?"
    return f"pid {pid}: {cmd[:90]}"


def ensure_ports_free(service: str, ports: tuple[int, ...]) -> None:
    """StackError naming the holder when any of ``ports`` is taken (before a start)."""
    for port in ports:
        holders = port_holders(port)
        if holders or port_in_use(port):
            who = describe_pid(holders[0]) if holders else "unknown process"
            raise StackError(f"port {port} ({service}) is in use by another process ({who})")


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds."""

    pid: int
    marker: str
    command: list[str] = field(default_factory=list)
    started: float = 0.0


def write_pid(path: Path, rec: PidRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec.__dict__) + "\n")


def read_pid(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), str(data["marker"]), list(data.get("command", [])),
                         float(data.get("started", 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def owned_pid(path: Path) -> int | None:
    """The pid in ``path`` if that process is alive and its command line has our marker.

    A stale pid file (process gone, or the pid reused by another program) yields None.
    """
    rec = read_pid(path)
    if rec is None:
        return None
    members = group_members(rec.pid)
    if any(is_service_cmdline(cmdline(pid) or "", rec.marker) for pid in [rec.pid, *members]):
        return rec.pid
    return None


def spawn(command: list[str], *, log: Path, pid_file: Path, marker: str,
          cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session (so it outlives us), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    write_pid(pid_file, PidRecord(proc.pid, marker, command, time.time()))
    _CHILDREN.append(proc)
    return proc


def stop_group(pgid: int, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """``sig`` to the process group, KILL after ``timeout`` s; True if it had to be killed."""
    # Not psutil.wait_procs: it would reap our own children behind their Popen, whose exit
    # code (a SIGKILL in the fault tests) must stay readable; _reap polls them instead.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap()
        if not group_members(pgid):
            return False
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for _ in range(50):
        _reap()
        if not group_members(pgid):
            break
        time.sleep(0.1)
    return True


def _reap() -> None:
    for proc in _CHILDREN:
        proc.poll()


def is_service_cmdline(cmd: str, marker: str) -> bool:
    """Whether a command line is one of our service processes (not a shell that names a path).

    >>> is_service_cmdline("/usr/bin/java -cp x kafka.Kafka /h/kafka/server.properties",
    ...                    "/h/kafka/server.properties")
    True
    >>> is_service_cmdline("tail -F /h/kafka/server.properties", "/h/kafka/server.properties")
    False

    The marker must be a whole path in the command line, so the stack home ``/a`` never
    claims the processes of ``/b/a`` or ``/a2``:

    >>> is_service_cmdline("redis-server :1 /b/a/redis/redis.conf", "/a/redis/redis.conf")
    False
    >>> is_service_cmdline("env ES_PATH_CONF=/a/elasticsearch/config x", "/a/elasticsearch")
    True
    >>> is_service_cmdline("env ES_PATH_CONF=/a/elasticsearch2/config x", "/a/elasticsearch")
    False
    """
    first = cmd.split(" ", 1)[0].rsplit("/", 1)[-1]
    whole = re.search(rf"(?:^|[\s=:]){re.escape(marker)}(?:$|[\s/])", cmd)
    return whole is not None and first in _SERVICE_PROGRAMS


def stray_pids(marker: str) -> list[int]:
    """Processes of ours by command line (``marker``), even if the pid file was lost."""
    me = {os.getpid(), os.getppid()}
    found = []
    for pid in psutil.pids():
        cmd = cmdline(pid)
        if pid not in me and cmd and is_service_cmdline(cmd, marker):
            found.append(pid)
    return found


def stop_strays(pids: list[int], timeout: float) -> None:
    """TERM to each of ``pids``, KILL to those still there after ``timeout`` s."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(cmdline(p) for p in pids):
        time.sleep(0.2)
    for p in pids:
        if cmdline(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a text file, e.g. a service's log (empty if it does not exist)."""
    if not path.exists():
        return []
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block, data = 8192, b""
        while size > 0 and data.count(b"\n") <= n:
            step = min(block, size)
            size -= step
            fh.seek(size)
            data = fh.read(step) + data
    lines = data.decode(errors="replace").splitlines()
    return lines[-n:] if n > 0 else []
