"""The daemon's HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (ready)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, dict[str, object]]]
PostHandler = Callable[[dict[str, object]], tuple[int, dict[str, object]]]
MAX_BODY = 64 * 1024


class HealthServer:
    """Serve metrics and probes on a background thread; ``port=0`` picks a free port."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, liveness: Probe, readiness: Probe,
                 post_routes: dict[str, PostHandler] | None = None) -> None:
        server = self
        routes = post_routes or {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, detail = (liveness if path == "/healthz" else readiness)()
                    body = json.dumps({"status": "ok" if ok else "unavailable", **detail}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b'{"error": "not found; try /metrics, /healthz or /readyz"}', "application/json")

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                handler = routes.get(self.path.split("?", 1)[0])
                if handler is None:
                    self._json(404, {"error": f"no POST route {self.path}; have {sorted(routes)}"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    self._json(400, {"error": "Content-Length must be an integer"})
                    return
                if length > MAX_BODY:
                    self._json(413, {"error": f"body over {MAX_BODY} bytes"})
                    return
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError as exc:
                    self._json(400, {"error": f"body is not JSON: {exc}"})
                    return
                if not isinstance(body, dict):
                    self._json(400, {"error": "body must be a JSON object"})
                    return
                self._json(*handler(body))

            def _json(self, status: int, payload: dict[str, object]) -> None:
                self._send(status, json.dumps(payload).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("http: " + format, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = server._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sentiloop-http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
