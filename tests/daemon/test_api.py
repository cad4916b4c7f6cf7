"""The admin API on a real HTTP port (uvicorn on 127.0.0.1), driven by its own OpenAPI document.

The daemon side is a small recording fake of ``Operations``: what is tested here is the HTTP layer —
authentication on every protected route, validation that names the field, body limits, and that no
generated request (valid or not) gets a 500. The real daemon behind it is tested in test_admin_daemon.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from sentiloop.daemon.api import build_app
from sentiloop.daemon.server import HttpServer

TOKEN = "t0ken-for-tests-0123456789abcdef"


class FakeOperations:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def _record(self, name: str, *args: Any) -> tuple[int, dict[str, Any]]:
        self.calls.append((name, args))
        return 200, {"ok": name}

    def liveness(self) -> tuple[bool, dict[str, object]]:
        return True, {"phase": "test"}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return False, {"kafka_connected": False}

    def status(self) -> dict[str, Any]:
        return {"events_stored": 0}

    def predict(self, texts: list[str]) -> tuple[int, dict[str, Any]]:
        self.calls.append(("predict", (texts,)))
        return 200, {"model_version": 1, "predictions": [{"label": "neutral", "probabilities": {"neutral": 1.0}} for _ in texts]}

    def retrain(self, mode: str | None, reason: str, force: bool) -> tuple[int, dict[str, Any]]:
        return self._record("retrain", mode, reason, force)

    def pause(self, target: str) -> tuple[int, dict[str, Any]]:
        return self._record("pause", target)

    def resume(self, target: str) -> tuple[int, dict[str, Any]]:
        return self._record("resume", target)

    def reload(self) -> tuple[int, dict[str, Any]]:
        return self._record("reload")

    def promote(self, version: int, reason: str) -> tuple[int, dict[str, Any]]:
        return self._record("promote", version, reason)

    def rollback(self, reason: str) -> tuple[int, dict[str, Any]]:
        return self._record("rollback", reason)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[HttpServer, FakeOperations]]:
    registry = CollectorRegistry()
    Counter("sentiloop_test_things", "a metric", registry=registry).inc()
    ops = FakeOperations()
    running = HttpServer(build_app(ops, registry, TOKEN, max_body=4096, max_texts=8), "127.0.0.1", 0, "test API").start()
    yield running, ops
    running.stop()


def request(server: HttpServer, method: str, path: str, body: Any = None, token: str | None = TOKEN,
            raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            text = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        text, status = exc.read(), exc.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode(errors="replace")


def protected_routes(server: HttpServer) -> list[tuple[str, str]]:
    _, document = request(server, "GET", "/openapi.json", token=None)
    return [(method.upper(), path.replace("{version}", "3")) for path, item in document["paths"].items()
            for method in item if path.startswith("/v1/")]


def test_openapi_lists_every_admin_route(server) -> None:  # type: ignore[no-untyped-def]
    routes = {path for _, path in protected_routes(server[0])}
    assert routes == {"/v1/status", "/v1/predict", "/v1/retrain", "/v1/pause", "/v1/resume", "/v1/reload",
                      "/v1/promote/3", "/v1/rollback"}


def test_every_admin_route_needs_the_token(server) -> None:  # type: ignore[no-untyped-def]
    running, _ops = server
    for method, path in protected_routes(running):
        body = {"text": "hi"} if path == "/v1/predict" else None
        status, answer = request(running, method, path, body, token=None)
        assert status == 401 and "bearer token" in answer["error"], (path, answer)
        assert request(running, method, path, body, token="wrong-token")[0] == 403, path
        assert request(running, method, path, body, headers={"Authorization": "Basic " + TOKEN}, token=None)[0] == 401
        assert request(running, method, path, body)[0] in (200, 202), path


def test_probes_and_metrics_are_open(server) -> None:  # type: ignore[no-untyped-def]
    running, _ = server
    assert request(running, "GET", "/healthz", token=None)[0] == 200
    assert request(running, "GET", "/readyz", token=None)[0] == 503
    status, body = request(running, "GET", "/metrics", token=None)
    assert status == 200 and "sentiloop_test_things_total 1.0" in body


def test_validation_errors_name_the_field(server) -> None:  # type: ignore[no-untyped-def]
    running, _ = server
    status, answer = request(running, "POST", "/v1/retrain", {"mode": "sideways"})
    assert status == 422 and answer["fields"][0]["field"] == "body.mode"
    status, answer = request(running, "POST", "/v1/predict", {"text": "a", "texts": ["b"]})
    assert status == 422 and "exactly one of" in answer["fields"][0]["reason"]
    status, answer = request(running, "POST", "/v1/predict", {"txt": "a"})
    assert status == 422 and any(f["field"] == "body.txt" for f in answer["fields"])
    status, answer = request(running, "POST", "/v1/predict", {"texts": ["a"] * 9})
    assert status == 413 and "at most 8" in answer["error"]


def test_bodies_over_the_limit_are_refused(server) -> None:  # type: ignore[no-untyped-def]
    running, _ = server
    assert request(running, "POST", "/v1/predict", raw=b'{"text": "' + b"x" * 5000 + b'"}')[0] == 413


def test_calls_reach_the_daemon_with_their_arguments(server) -> None:  # type: ignore[no-untyped-def]
    running, ops = server
    ops.calls.clear()
    request(running, "POST", "/v1/retrain", {"mode": "full", "reason": "why not", "force": True})
    request(running, "POST", "/v1/pause", {"target": "ingestion"})
    request(running, "POST", "/v1/promote/7", {"reason": "better"})
    status, answer = request(running, "POST", "/v1/predict", {"texts": ["good", "bad"]})
    assert status == 200 and len(answer["predictions"]) == 2
    assert ops.calls == [("retrain", ("full", "why not", True)), ("pause", ("ingestion",)), ("promote", (7, "better")),
                         ("predict", (["good", "bad"],))]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["text", "texts", "mode", "reason", "force", "target", "x"])
bodies = st.one_of(json_values, st.dictionaries(field_names, json_values, max_size=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_generated_request_gets_a_server_error(server, data) -> None:  # type: ignore[no-untyped-def]
    running, _ = server
    routes = protected_routes(running) + [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")]
    method, path = data.draw(st.sampled_from(routes))
    if "/promote/" in path:
        path = "/v1/promote/" + data.draw(st.sampled_from(["0", "-1", "99999999999999999999", "abc", "7", "%00", "1.5"]))
    token = data.draw(st.sampled_from([TOKEN, None, "nope", TOKEN + " ", "é"]))
    raw = data.draw(st.one_of(bodies.map(lambda b: json.dumps(b).encode()), st.binary(max_size=64)))
    status, _ = request(running, data.draw(st.sampled_from([method, "GET", "PUT", "DELETE"])), path, raw=raw, token=token)
    assert status != 500 and (status < 500 or path == "/readyz"), (method, path, status)
    if path.startswith("/v1/") and token not in (TOKEN, TOKEN + " "):
        assert status in (401, 403, 405), (path, token, status)
