"""What the stack needs on the machine: Java, Maven, redis-server, Kafka's jars, the ES zip."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

from precog.errors import StackError
from precog.stack.configs import elasticsearch_fetch_pom, kafka_pom
from precog.stack.layout import Echo, Layout

ES_USER = "precog-es"
JVM_DIR = Path("/usr/lib/jvm")
JAVA_MAJORS = (17, 21)  # what Kafka 3.9 and Elasticsearch 8.15 both run on; 17 preferred

_apt_updated = False


def run_step(cmd: list[str], *, log: Path | None = None, what: str) -> None:
    """Run a setup command; on failure raise a one-line StackError naming ``what``."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise StackError(f"{what} failed: {cmd[0]} not found") from exc
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout + res.stderr)
        lines = [ln.strip() for ln in plain.splitlines() if ln.strip()]
        err = [ln.removeprefix("[ERROR]").strip() for ln in lines if ln.startswith("[ERROR]")]
        err = [ln for ln in err if ln] or lines[-1:] or ["(no output)"]
        where = f" (full output: {log})" if log else ""
        raise StackError(f"{what} failed (exit {res.returncode}): {err[0][:300]}{where}")


def apt_install(package: str, echo: Echo) -> None:
    """``apt-get install -y package`` (after one ``apt-get update``); needs root."""
    global _apt_updated
    if os.geteuid() != 0:
        raise StackError(f"{package} is not installed: run 'sudo apt-get install -y {package}'")
    if shutil.which("apt-get") is None:
        raise StackError(f"{package} is not installed and apt-get is not available")
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    if not _apt_updated:
        echo("  apt-get update")
        run_step([*env_cmd, "apt-get", "update", "-q"], what="apt-get update")
        _apt_updated = True
    echo(f"  apt-get install -y {package}")
    run_step([*env_cmd, "apt-get", "install", "-y", "-q", "--no-install-recommends", package],
             what=f"apt-get install {package}")


def _find_or_install(program: str, package: str, label: str, echo: Echo) -> str:
    """The path of ``program``, installing Debian's ``package`` (as root) when it is missing."""

    def find() -> str | None:
        usr_bin = Path("/usr/bin") / program
        return shutil.which(program) or (str(usr_bin) if usr_bin.exists() else None)

    path = find()
    if path is None:
        echo(f"{label}: {program} not found, installing Debian's package")
        apt_install(package, echo)
        path = find()
        if path is None:
            raise StackError(f"{program} not found after apt-get install {package}")
    return path


def find_redis_server(echo: Echo) -> str:
    return _find_or_install("redis-server", "redis-server", "redis", echo)


def find_openssl(echo: Echo) -> str:
    return _find_or_install("openssl", "openssl", "tls", echo)


def find_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven not found: install it (apt-get install -y maven)")
    return mvn


def parse_java_major(version_output: str) -> int | None:
    """The major version from ``java -version`` output.

    >>> parse_java_major('openjdk version "17.0.15" 2025-04-15')
    17
    >>> parse_java_major('java version "1.8.0_392"')
    8
    >>> parse_java_major("nothing here") is None
    True
    """
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not m:
        return None
    major = int(m[1])
    return int(m[2]) if major == 1 and m[2] else major


def _java_home_major(home: Path) -> int | None:
    release = home / "release"
    if release.exists():
        m = re.search(r'JAVA_VERSION="([^"]+)"', release.read_text())
        if m:
            return parse_java_major(f'version "{m[1]}"')
    java = home / "bin" / "java"
    if not java.exists():
        return None
    res = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
    return parse_java_major(res.stderr + res.stdout)


def find_java_home() -> Path:
    """A Java home of a supported major version (17 preferred), or StackError."""
    candidates: list[Path] = []
    java = shutil.which("java")
    if java:
        candidates.append(Path(java).resolve().parent.parent)
    jvm = JVM_DIR
    if jvm.is_dir():
        candidates += sorted(p for p in jvm.iterdir() if p.is_dir() and not p.is_symlink())
    by_major: dict[int, Path] = {}
    for home in candidates:
        major = _java_home_major(home)
        if major in JAVA_MAJORS and (home / "bin" / "java").exists():
            by_major.setdefault(major, home)
    for major in JAVA_MAJORS:
        if major in by_major:
            return by_major[major]
    raise StackError("Java 17 not found: install it (apt-get install -y openjdk-17-jdk-headless)")


def install_kafka(layout: Layout, echo: Echo) -> Path:
    """Kafka's jars in the cache (Maven ``dependency:copy-dependencies``), once."""
    libs = layout.kafka_libs
    done = libs / ".complete"
    if done.exists():
        return libs
    mvn = find_maven()
    project = libs.parent
    project.mkdir(parents=True, exist_ok=True)
    (project / "pom.xml").write_text(kafka_pom(layout.kafka_version))
    echo(f"kafka: fetching org.apache.kafka:kafka_2.13:{layout.kafka_version} and its"
         f" dependencies with Maven into {libs}")
    if libs.exists():
        shutil.rmtree(libs)
    run_step([mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(project / "pom.xml"),
              "dependency:copy-dependencies", f"-DoutputDirectory={libs}"],
             log=project / "mvn.log", what=f"download of Kafka {layout.kafka_version} jars")
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(f"download of Kafka jars failed: no kafka_2.13 jar in {libs}")
    done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    return libs


def install_elasticsearch_zip(layout: Layout, echo: Echo) -> Path:
    """The integ-test-zip distribution in the cache (Maven ``dependency:copy``), once."""
    dest = layout.elasticsearch_zip
    if dest.exists():
        return dest
    mvn = find_maven()
    v = layout.elasticsearch_version
    project = layout.cache / f"elasticsearch-{v}-fetch"
    project.mkdir(parents=True, exist_ok=True)
    (project / "pom.xml").write_text(elasticsearch_fetch_pom(v))
    artifact = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{v}:zip"
    echo(f"elasticsearch: fetching {artifact} with Maven into {layout.cache}")
    run_step([mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(project / "pom.xml"),
              "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={layout.cache}"],
             log=project / "mvn.log", what=f"download of Elasticsearch {v}")
    if not dest.exists():
        raise StackError(f"download of Elasticsearch {v} failed: {dest} not written")
    return dest


def extract_zip(archive: Path, target: Path) -> None:
    """Unzip keeping the Unix permission bits (the launch scripts must stay executable)."""
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, tmp))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                path.chmod(mode)
    tmp.rename(target)


def es_run_user(echo: Echo) -> str | None:
    """The user Elasticsearch runs as: ``precog-es`` when we are root (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(ES_USER)
    except KeyError:
        echo(f"elasticsearch: creating system user {ES_USER} (Elasticsearch refuses root)")
        run_step(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                  ES_USER], what=f"useradd {ES_USER}")
    return ES_USER


def chown_tree(path: Path, user: str) -> None:
    """``chown -R user`` without following symlinks (the ES user must own its directory)."""
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def check_traversable(path: Path, user: str) -> None:
    """Every parent of ``path`` must let ``user`` in; otherwise say which one does not."""
    res = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(path)],
                         capture_output=True, check=False)
    if res.returncode != 0:
        raise StackError(f"user {user} cannot enter {path}: make its parent directories"
                         " world-executable or set PRECOG_STACK_HOME elsewhere")
