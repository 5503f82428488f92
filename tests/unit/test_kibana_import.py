"""``precog kibana import`` request building and response parsing, against a stub Kibana.

Kibana cannot run on these machines, so a local ``http.server`` on 127.0.0.1 stands in for
it: a test double that records the request and answers like Kibana's saved-objects import
API. It is not a mock of Kafka, Redis or Elasticsearch, which the integration tests use
for real.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from precog.cli import app
from precog.cli.kibana import KibanaSettings, import_saved_objects, parse_import_response
from precog.errors import PrecogError, ServiceUnavailable

pytestmark = pytest.mark.unit
NDJSON = b'{"id":"a","type":"lens"}\n{"id":"d","type":"dashboard"}\n'


class StubKibana:
    """Records each request; answers with the configured status and JSON body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.reply: dict[str, Any] = {"success": True, "successCount": 0, "successResults": []}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": body})
                out = json.dumps(stub.reply).encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def uploaded_file(self, i: int = 0) -> tuple[str, str, bytes]:
        """(form field name, filename, content) of the multipart upload."""
        req = self.requests[i]
        raw = (f"Content-Type: {req['headers']['Content-Type']}\r\n\r\n").encode() + req["body"]
        msg = BytesParser(policy=HTTP).parsebytes(raw)
        (part,) = msg.iter_parts()
        return (part.get_param("name", header="content-disposition"), part.get_filename(),
                part.get_payload(decode=True))


@pytest.fixture
def kibana() -> Iterator[StubKibana]:
    stub = StubKibana()
    thread = threading.Thread(target=stub.server.serve_forever, daemon=True)
    thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def test_posts_multipart_file_with_xsrf_and_basic_auth(kibana: StubKibana) -> None:
    kibana.reply = {"success": True, "successCount": 2, "successResults": [
        {"type": "lens", "id": "a", "meta": {"title": "A"}, "overwrite": True},
        {"type": "dashboard", "id": "d", "meta": {"title": "D"}}]}
    cfg = KibanaSettings(url=kibana.url, space="parallel", username="elastic", password="s3cret")
    results = import_saved_objects(NDJSON, cfg)

    req = kibana.requests[0]
    assert req["path"] == "/s/parallel/api/saved_objects/_import?overwrite=true"
    assert req["headers"]["kbn-xsrf"] == "true"
    assert req["headers"]["authorization"] == "Basic ZWxhc3RpYzpzM2NyZXQ="
    assert req["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    assert kibana.uploaded_file() == ("file", "saved_objects.ndjson", NDJSON)
    assert [(r.type, r.id, r.title, r.ok) for r in results] == [
        ("lens", "a", "A", True), ("dashboard", "d", "D", True)]


def test_api_key_wins_and_default_space_has_no_prefix(kibana: StubKibana) -> None:
    import_saved_objects(NDJSON, KibanaSettings(url=kibana.url + "/", api_key="a2V5",
                                                username="u", password="p"))
    req = kibana.requests[0]
    assert req["path"] == "/api/saved_objects/_import?overwrite=true"
    assert req["headers"]["Authorization"] == "ApiKey a2V5"


def test_per_object_errors_are_reported(kibana: StubKibana) -> None:
    kibana.reply = {"success": False, "successCount": 1,
                    "successResults": [{"type": "index-pattern", "id": "dv",
                                        "meta": {"title": "*-alerts"}}],
                    "errors": [{"id": "d", "type": "dashboard", "title": "D",
                                "meta": {"title": "D"},
                                "error": {"type": "missing_references", "references": [
                                    {"type": "lens", "id": "x"}, {"type": "lens", "id": "y"}]}},
                               {"id": "s", "type": "search", "meta": {"title": "S"},
                                "error": {"type": "unknown", "message": "boom"}}]}
    lines = [r.line() for r in import_saved_objects(NDJSON, KibanaSettings(url=kibana.url))]
    assert lines == ["ok     index-pattern dv (*-alerts)",
                     "FAILED dashboard d (D): missing_references: missing lens x, lens y",
                     "FAILED search s (S): unknown: boom"]


def test_http_error_carries_kibanas_message(kibana: StubKibana) -> None:
    kibana.status = 401
    kibana.reply = {"statusCode": 401, "error": "Unauthorized",
                    "message": "[security_exception] unable to authenticate user"}
    with pytest.raises(PrecogError, match=r"HTTP 401\): \[security_exception\] unable"):
        import_saved_objects(NDJSON, KibanaSettings(url=kibana.url))


def test_unexpected_body_is_an_error() -> None:
    with pytest.raises(PrecogError, match="unexpected Kibana response"):
        parse_import_response(200, b'{"hello": 1}')


def test_unreachable_kibana_names_the_url() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ServiceUnavailable, match=f"Kibana is not reachable at {url}"):
        import_saved_objects(NDJSON, KibanaSettings(url=url, timeout=2))


def test_cli_import_prints_results_and_fails_on_errors(kibana: StubKibana, tmp_path: Path
                                                       ) -> None:
    file = tmp_path / "so.ndjson"
    file.write_bytes(NDJSON)
    kibana.reply = {"success": False, "successCount": 1,
                    "successResults": [{"type": "lens", "id": "a", "meta": {"title": "A"}}],
                    "errors": [{"id": "d", "type": "dashboard", "title": "D",
                                "error": {"type": "conflict"}}]}
    res = CliRunner().invoke(app, ["kibana", "import", "--url", kibana.url, "--file", str(file)])
    assert res.exit_code == 1
    assert res.output.splitlines() == ["ok     lens a (A)", "FAILED dashboard d (D): conflict",
                                       f"1 imported, 1 failed, into {kibana.url}"]
    assert kibana.uploaded_file()[2] == NDJSON
