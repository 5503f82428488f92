"""``precog kibana``: export, statically check and import the Kibana saved objects.

``import`` posts the NDJSON to Kibana's saved-objects import API
(``POST [/s/<space>]/api/saved_objects/_import?overwrite=true``, multipart ``file``,
header ``kbn-xsrf: true``) with basic auth or an API key, and reports every object's
result as Kibana gave it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import urllib3

from precog.dashboards import (
    DEFAULT_NAMESPACE,
    NDJSON_PATH,
    TEMPLATES_DIR,
    check_definitions,
    check_ndjson,
    dashboards,
    export_ndjson,
    load_templates,
)
from precog.errors import ConfigError, PrecogError, ServiceUnavailable, redacted
from precog.settings import KibanaSettings, get_settings
from precog.spec import PipelineSpec, load_spec

app = typer.Typer(help="Kibana saved objects: export, check, import.", no_args_is_help=True)


# ---------------------------------------------------------------------------- import: pure
def import_url(base: str, space: str | None = None) -> str:
    """The import endpoint, overwriting existing objects.

    >>> import_url("http://kb:5601/", "parallel")
    'http://kb:5601/s/parallel/api/saved_objects/_import?overwrite=true'
    >>> import_url("http://kb:5601")
    'http://kb:5601/api/saved_objects/_import?overwrite=true'
    """
    prefix = f"/s/{space}" if space and space != "default" else ""
    return f"{base.rstrip('/')}{prefix}/api/saved_objects/_import?overwrite=true"


def auth_headers(cfg: KibanaSettings) -> dict[str, str]:
    """``kbn-xsrf`` plus the Authorization header (API key preferred over basic auth).

    >>> auth_headers(KibanaSettings(api_key="abc"))
    {'kbn-xsrf': 'true', 'Authorization': 'ApiKey abc'}
    >>> auth_headers(KibanaSettings(username="u", password="p"))["authorization"]
    'Basic dTpw'
    """
    headers = {"kbn-xsrf": "true"}
    if cfg.api_key:
        headers["Authorization"] = f"ApiKey {cfg.api_key.get_secret_value()}"
    elif cfg.username and cfg.password:
        headers.update(urllib3.make_headers(
            basic_auth=f"{cfg.username}:{cfg.password.get_secret_value()}"))
    return headers


@dataclass(frozen=True)
class ObjectResult:
    """What Kibana said about one imported object."""

    type: str
    id: str
    title: str
    ok: bool
    error: str = ""

    def line(self) -> str:
        """One human line for the command's output."""
        name = f"{self.type} {self.id}" + (f" ({self.title})" if self.title else "")
        return f"ok     {name}" if self.ok else f"FAILED {name}: {self.error}"


def _describe_error(err: dict[str, Any]) -> str:
    kind = err.get("type", "unknown")
    detail = err.get("message") or err.get("reason") or ""
    refs = err.get("references") or []
    if refs:
        detail = "missing " + ", ".join(f"{r.get('type')} {r.get('id')}" for r in refs)
    return f"{kind}: {detail}" if detail else kind


def parse_import_response(status: int, body: bytes) -> list[ObjectResult]:
    """Per-object results from Kibana's import response; an HTTP error or a body without
    results raises PrecogError with Kibana's own message.

    >>> body = json.dumps({"success": False, "successCount": 1,
    ...     "successResults": [{"type": "lens", "id": "a", "meta": {"title": "A"}}],
    ...     "errors": [{"type": "dashboard", "id": "d", "title": "D", "error":
    ...         {"type": "missing_references", "references": [{"type": "lens", "id": "x"}]}}]})
    >>> [r.line() for r in parse_import_response(200, body.encode())]
    ['ok     lens a (A)', 'FAILED dashboard d (D): missing_references: missing lens x']
    """
    try:
        payload = json.loads(body or b"{}")
    except json.JSONDecodeError:
        payload = {}
    if status >= 400 or not isinstance(payload, dict):
        message = payload.get("message") if isinstance(payload, dict) else None
        text = message or body[:300].decode("utf-8", "replace").strip()
        raise PrecogError(f"Kibana refused the import (HTTP {status}): {text}")
    if "successResults" not in payload and "errors" not in payload:
        raise PrecogError(f"unexpected Kibana response (HTTP {status}): {payload}")
    results = [ObjectResult(r.get("type", "?"), r.get("id", "?"),
                            (r.get("meta") or {}).get("title", ""), True)
               for r in payload.get("successResults", [])]
    results += [ObjectResult(e.get("type", "?"), e.get("id", "?"),
                             e.get("title") or (e.get("meta") or {}).get("title", ""), False,
                             _describe_error(e.get("error") or {}))
                for e in payload.get("errors", [])]
    return results


def check_url(url: str, given_as: str) -> None:
    """A Kibana base URL is ``http(s)://host[:port][/path]``; anything else is refused
    before any request (``given_as``: --url or PRECOG_KIBANA_URL).

    >>> check_url("https://kb.example:5601/base", "--url")
    >>> check_url("notaurl", "--url")
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: bad --url 'notaurl': use http://HOST[:PORT] or https://HOST[:PORT]
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (
            parts.port is None or parts.port > 0)  # .port raises ValueError when bad
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"bad {given_as} {redacted(url)!r}: use http://HOST[:PORT] or "
                          "https://HOST[:PORT]")


def read_text_file(path: Path, given_as: str = "") -> str:
    """A UTF-8 text file's content; a directory, a binary file or an unreadable path is
    a one-line ConfigError naming ``path`` (after ``given_as``, the option, if any)."""
    name = f"{given_as} {path}" if given_as else str(path)
    if not path.exists():
        raise ConfigError(f"no such file: {path}")
    if path.is_dir():
        raise ConfigError(f"{name}: is a directory, not a file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text (byte {exc.start}: "
                          f"{exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{name}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------- import: I/O
def import_saved_objects(ndjson: bytes, cfg: KibanaSettings) -> list[ObjectResult]:
    """POST the export to Kibana; unreachable Kibana raises ServiceUnavailable."""
    kw: dict[str, Any] = {"timeout": urllib3.Timeout(total=cfg.timeout),
                          "retries": urllib3.Retry(total=2, backoff_factor=0.5,
                                                   allowed_methods=None, status=0)}
    if cfg.url.startswith("https"):
        kw["cert_reqs"] = "CERT_REQUIRED" if cfg.verify_certs else "CERT_NONE"
        if cfg.ca_certs:
            kw["ca_certs"] = str(cfg.ca_certs)
    http = urllib3.PoolManager(**kw)
    url = import_url(cfg.url, cfg.space)
    try:
        resp = http.request("POST", url, headers=auth_headers(cfg),
                            fields={"file": ("saved_objects.ndjson", ndjson,
                                             "application/ndjson")})
    except urllib3.exceptions.HTTPError as exc:
        raise ServiceUnavailable("Kibana", cfg.url, type(exc).__name__) from None
    return parse_import_response(resp.status, resp.data)


# ---------------------------------------------------------------------------- commands
def _spec(spec: Path | None) -> PipelineSpec:
    return load_spec(spec or get_settings().spec)


NamespaceOption = Annotated[str | None, typer.Option(
    "--namespace", "-n", help="the namespace the dashboards' namespace controls select")]


def _namespace(namespace: str | None, default: str) -> str:
    """The namespace an export is for: --namespace, else ``default``; validated like
    PRECOG_NAMESPACE."""
    if namespace is None:
        return default
    from precog.settings import namespace_problem

    problem = namespace_problem(namespace)
    if problem:
        raise ConfigError(f"bad --namespace {namespace!r}: {problem}")
    return namespace


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option(help="where to write the NDJSON")] = NDJSON_PATH,
    spec: Annotated[Path | None, typer.Option(help="pipeline spec (feature columns)")] = None,
    namespace: NamespaceOption = None,
) -> None:
    """Generate the saved objects from precog/dashboards/ and write them as NDJSON (for
    --namespace, default prod: the committed file)."""
    pipeline = _spec(spec)
    text = export_ndjson(pipeline.feature_names, business=pipeline.business,
                         namespace=_namespace(namespace, DEFAULT_NAMESPACE))
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file name (e.g. "
                          f"{out / NDJSON_PATH.name})")
    # a folder that cannot be made or a file that cannot be written: main's one line
    # naming the path and the reason (tests/unit/test_error_messages.py)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {len(text.splitlines())} saved objects to {out}")


@app.command("check")
def check_cmd(
    file: Annotated[Path, typer.Argument(help="NDJSON export to check")] = NDJSON_PATH,
    templates: Annotated[Path, typer.Option(help="index templates directory")] = TEMPLATES_DIR,
    spec: Annotated[Path | None, typer.Option(help="pipeline spec (feature columns)")] = None,
    namespace: NamespaceOption = None,
) -> None:
    """Check an export statically against the index templates and the indices `precog
    setup` creates; exit 1 on problems."""
    from precog.namespace import index_stems

    content = read_text_file(file)
    tmpl = load_templates(templates)
    if not tmpl:
        raise ConfigError(f"no index templates in {templates}")
    pipeline = _spec(spec)
    names, business = pipeline.feature_names, pipeline.business
    problems = check_ndjson(content, tmpl, setup_indices=index_stems(templates),
                            namespace=_namespace(namespace, DEFAULT_NAMESPACE)
                            ) + check_definitions(dashboards(names, business), tmpl)
    stale = file.resolve() == NDJSON_PATH.resolve() and content != export_ndjson(
        names, business=business)
    for p in problems:
        typer.echo(str(p))
    if stale:
        typer.echo(f"{file}: differs from precog/dashboards/; run `precog kibana export`")
    n = len(content.splitlines())
    if problems or stale:
        typer.echo(f"{len(problems)} problem(s) in {n} saved objects")
        raise typer.Exit(1)
    typer.echo(f"ok: {n} saved objects pass the static checks")


@app.command("import")
def import_cmd(
    url: Annotated[str | None, typer.Option(help="Kibana URL [PRECOG_KIBANA_URL]")] = None,
    space: Annotated[str | None, typer.Option(help="space [PRECOG_KIBANA_SPACE]")] = None,
    username: Annotated[str | None, typer.Option(help="[PRECOG_KIBANA_USERNAME]")] = None,
    file: Annotated[Path | None, typer.Option(
        help="NDJSON export to import as it is (default: generated for --namespace)")] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="the namespace the dashboards select [PRECOG_NAMESPACE]"
    )] = None,
    spec: Annotated[Path | None, typer.Option(help="pipeline spec (feature columns)")] = None,
) -> None:
    """Import the saved objects into Kibana (overwrite); report each object's result.

    The dashboards are generated for the namespace (their namespace control selects it);
    for several namespaces in one Kibana, import each into its own --space.
    Password and API key come only from PRECOG_KIBANA_PASSWORD / PRECOG_KIBANA_API_KEY.
    """
    given = {k: v for k, v in {"url": url, "space": space, "username": username}.items() if v}
    cfg = get_settings().kibana.model_copy(update=given)
    check_url(cfg.url, "--url" if url else "PRECOG_KIBANA_URL")
    if file is not None:
        ndjson = read_text_file(file, "--file").encode()
    else:
        pipeline = _spec(spec)
        ns = _namespace(namespace, get_settings().namespace)
        ndjson = export_ndjson(pipeline.feature_names, business=pipeline.business,
                               namespace=ns).encode()
        typer.echo(f"dashboards for namespace {ns}")
    results = import_saved_objects(ndjson, cfg)
    for r in results:
        typer.echo(r.line())
    failed = sum(not r.ok for r in results)
    typer.echo(f"{len(results) - failed} imported, {failed} failed, into {cfg.url}"
               + (f" space {cfg.space}" if cfg.space else ""))
    if failed:
        raise typer.Exit(1)
