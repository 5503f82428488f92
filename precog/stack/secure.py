"""The secure stack: generated credentials, a local CA and certificate, the client settings."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from precog.errors import StackError
from precog.settings import Settings
from precog.stack.configs import CLIENT_USER
from precog.stack.install import find_openssl, run_step
from precog.stack.layout import Echo, Layout

ES_ROLE = "precog_app"


@dataclass(frozen=True, repr=False)
class Credentials:
    """The secure stack's passwords, generated once into ``credentials.json`` (mode 0600)."""

    kafka_broker_password: str
    kafka_password: str
    redis_password: str
    elasticsearch_password: str

    def __repr__(self) -> str:  # never a password in a traceback or a log line
        return "Credentials(<redacted>)"

    def secrets(self) -> list[str]:
        """Every password, e.g. to check that none of them shows anywhere."""
        return [self.kafka_broker_password, self.kafka_password, self.redis_password,
                self.elasticsearch_password]


def load_credentials(layout: Layout) -> Credentials | None:
    """The secure stack's credentials, or None before the first ``up --secure``."""
    try:
        data = json.loads(layout.credentials_file.read_text())
        return Credentials(**{k: str(data[k]) for k in Credentials.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_credentials(layout: Layout) -> Credentials:
    """The credentials of this stack home, generated (``secrets``) and written 0600 once."""
    creds = load_credentials(layout)
    if creds is not None:
        layout.credentials_file.chmod(0o600)
        return creds
    creds = Credentials(*(secrets.token_urlsafe(24) for _ in Credentials.__dataclass_fields__))
    layout.home.mkdir(parents=True, exist_ok=True)
    tmp = layout.credentials_file.with_suffix(".partial")
    write_private(tmp, json.dumps(creds.__dict__, indent=1))
    tmp.rename(layout.credentials_file)
    return creds


def write_private(path: Path, text: str) -> None:
    """Write a file that holds a secret: mode 0600 from the moment it exists."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(text)


#: X.509 v3 extensions of the server certificate: valid for the loopback address and name
#: the stack listens on, for TLS servers and (Kafka's controller listener) clients.
SERVER_CERT_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
)


def ensure_tls(layout: Layout, echo: Echo) -> Path:
    """A local CA and a server certificate signed by it (PEM, RSA 2048), generated once.

    ``tls/ca.pem`` is what clients trust (``PRECOG_*_CA*``); ``server.key`` and
    ``server.pem`` serve Kafka, Redis and Elasticsearch; ``server-keystore.pem`` is both
    for Kafka's PEM keystore. Private keys are mode 0600.
    """
    tls = layout.tls_dir
    if (tls / "server-keystore.pem").exists():
        return tls
    openssl = find_openssl(echo)
    echo(f"tls: generating a local CA and a server certificate in {tls}")
    work = tls.with_name("tls.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)  # readable: clients of other users need ca.pem; keys are 0600
    (work / "server.ext").write_text(SERVER_CERT_EXTENSIONS)
    log = work / "openssl.log"
    run_step([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
              "-subj", "/CN=precog local stack CA", "-keyout", str(work / "ca.key"),
              "-out", str(work / "ca.pem"), "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], log=log, what="openssl CA")
    run_step([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
              "-keyout", str(work / "server.key"), "-out", str(work / "server.csr")],
             log=log, what="openssl server key")
    run_step([openssl, "x509", "-req", "-sha256", "-days", "825", "-in", str(work / "server.csr"),
              "-CA", str(work / "ca.pem"), "-CAkey", str(work / "ca.key"), "-CAcreateserial",
              "-extfile", str(work / "server.ext"), "-out", str(work / "server.pem")],
             log=log, what="openssl server certificate")
    (work / "server-keystore.pem").write_text(
        (work / "server.key").read_text() + (work / "server.pem").read_text())
    for key in ("ca.key", "server.key", "server-keystore.pem"):
        (work / key).chmod(0o600)
    work.rename(tls)
    return tls


def secure_client_fields(layout: Layout, creds: Credentials) -> dict[str, dict[str, Any]]:
    """The client settings (section -> field -> value) that log in to the secure stack."""
    ca = layout.tls_dir / "ca.pem"
    return {
        "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                  "sasl_username": CLIENT_USER, "sasl_password": SecretStr(creds.kafka_password),
                  "ssl_cafile": ca},
        "redis": {"username": CLIENT_USER, "password": SecretStr(creds.redis_password),
                  "ssl_ca_certs": ca},
        "elasticsearch": {"username": CLIENT_USER,
                          "password": SecretStr(creds.elasticsearch_password), "ca_certs": ca},
    }


def secure_env(settings: Settings) -> dict[str, str]:
    """The ``PRECOG_*`` variables that point every precog client at this secure stack.

    What ``precog stack env --secure`` prints (the only place the passwords are printed).
    """
    layout = Layout.from_settings(settings)
    creds = load_credentials(layout)
    if creds is None:
        raise StackError(f"no credentials in {layout.credentials_file}: run"
                         " 'precog stack up --secure' first")
    st = settings.stack
    env = {"PRECOG_STACK_SECURE": "true", "PRECOG_STACK_HOME": str(layout.home),
           **{f"PRECOG_STACK_{name.upper()}": str(getattr(st, name)) for name in (
               "kafka_port", "kafka_controller_port", "redis_port", "elasticsearch_port",
               "elasticsearch_transport_port")}}
    for section, fields in secure_client_fields(layout, creds).items():
        for name, value in fields.items():
            plain = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"PRECOG_{section.upper()}_{name.upper()}"] = plain
    return env


def export_lines(env: dict[str, str]) -> list[str]:
    """``export NAME=value`` lines for a shell (``eval "$(precog stack env --secure)"``).

    >>> export_lines({"PRECOG_X": "a b"})
    ["export PRECOG_X='a b'"]
    """
    return [f"export {k}={shlex.quote(v)}" for k, v in env.items()]


def with_stack_credentials(settings: Settings) -> Settings:
    """Secure stack: the settings with its credentials where the client gives none.

    What the stack's own health checks log in with. An external service (``PRECOG_*_URL``)
    and any field set explicitly keep their value. A plain stack is returned unchanged.
    """
    if not settings.stack.secure:
        return settings
    layout = Layout.from_settings(settings)
    creds = load_credentials(layout)
    if creds is None:
        return settings
    given = settings.stack_overridden()
    update: dict[str, Any] = {}
    for section, fields in secure_client_fields(layout, creds).items():
        client = getattr(settings, section)
        if given[section]:
            continue
        missing = {k: v for k, v in fields.items() if k not in client.model_fields_set}
        update[section] = client.model_copy(update=missing)
    return settings.model_copy(update=update)


def elasticsearch_secure_config(layout: Layout, java_home: Path, creds: Credentials) -> None:
    """Certificates into ES's config dir (its security manager reads only there), the role,
    and the file-realm user ``precog`` (password on stdin, never on a command line)."""
    conf = layout.dir("elasticsearch") / "config"
    (conf / "tls").mkdir(exist_ok=True)
    for name in ("ca.pem", "server.pem", "server.key"):
        shutil.copyfile(layout.tls_dir / name, conf / "tls" / name)
    (conf / "tls" / "server.key").chmod(0o600)
    (conf / "roles.yml").write_text(
        f"{ES_ROLE}:\n"
        "  cluster: [monitor, manage_index_templates, manage_own_api_key]\n"
        "  indices:\n    - names: ['*']\n      privileges: [all]\n"
    )
    users = conf / "users"
    if users.exists() and any(ln.startswith(f"{CLIENT_USER}:")
                              for ln in users.read_text().splitlines()):
        return
    tool = layout.elasticsearch_dist / "bin" / "elasticsearch-users"
    pw = creds.elasticsearch_password
    res = subprocess.run(
        [str(tool), "useradd", CLIENT_USER, "-r", ES_ROLE], input=f"{pw}\n{pw}\n",
        capture_output=True, text=True, check=False,
        env={**os.environ, "ES_JAVA_HOME": str(java_home), "ES_PATH_CONF": str(conf)},
    )
    if res.returncode != 0:
        out = (res.stdout + res.stderr).replace(pw, "***").strip().splitlines() or ["?"]
        raise StackError(f"elasticsearch-users useradd failed (exit {res.returncode}):"
                         f" {out[-1][:200]}")
