"""The daemon's HTTP surface on FastAPI: probes, /metrics, and the authenticated admin API under /v1/.

Why FastAPI (on Starlette, served by uvicorn): request bodies are pydantic models, so validation and
the field-naming error messages come from the same machinery as the config, and the OpenAPI document
is generated from the code rather than kept by hand (the property test is driven by it).

Every /v1/* route needs ``Authorization: Bearer <token>``: 401 without a token, 403 with a wrong one.
Probes and /metrics stay open, by convention, so they can be exposed on their own port.
The app only talks to an :class:`Operations` object: the daemon in production, a small fake in tests.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentiloop import __version__
from sentiloop.daemon.auth import token_matches

Answer = tuple[int, dict[str, Any]]
MAX_TEXT = 5000


class Operations(Protocol):
    """What the API can ask of a running daemon; each answer is (HTTP status, JSON body)."""

    def liveness(self) -> tuple[bool, dict[str, object]]: ...
    def readiness(self) -> tuple[bool, dict[str, object]]: ...
    def status(self) -> dict[str, Any]: ...
    def predict(self, texts: list[str]) -> Answer: ...
    def retrain(self, mode: str | None, reason: str, force: bool) -> Answer: ...
    def pause(self, target: str) -> Answer: ...
    def resume(self, target: str) -> Answer: ...
    def reload(self) -> Answer: ...
    def promote(self, version: int, reason: str) -> Answer: ...
    def rollback(self, reason: str) -> Answer: ...


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Body):
    """One text (``text``) or a batch (``texts``)."""

    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    texts: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` (a string) or `texts` (a list of strings)")
        for i, text in enumerate(self.texts or []):
            if not 1 <= len(text) <= MAX_TEXT:
                raise ValueError(f"texts[{i}] has {len(text)} characters; 1..{MAX_TEXT} are accepted")
        return self


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    model_version: int
    predictions: list[Prediction]


class RetrainRequest(_Body):
    mode: Literal["strategic", "full"] | None = Field(default=None, description="default: retrain.mode")
    reason: str = Field(default="requested through the admin API", min_length=1, max_length=500)
    force: bool = Field(default=False, description="run despite the policy's cool-down/rate limit or a pause")


class PauseRequest(_Body):
    target: Literal["ingestion", "retraining", "all"] = "all"


class ReasonRequest(_Body):
    reason: str | None = Field(default=None, min_length=1, max_length=500)


class _BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _plain(send, 413 if declared.isdigit() else 400, f"body over {self.limit} bytes" if declared.isdigit()
                         else "Content-Length must be a whole number")
            return
        received = 0
        started = False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except _TooLarge:
            if not started:
                await _plain(send, 413, f"body over {self.limit} bytes")


class _TooLarge(Exception):
    pass


async def _plain(send: Send, status: int, error: str, hint: str | None = None,
                 extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = JSONResponse({"error": error, **({"hint": hint} if hint else {})}).body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _answer(answer: Answer) -> JSONResponse:
    status, body = answer
    return JSONResponse(body, status_code=status)


def build_app(ops: Operations, registry: CollectorRegistry, token: str | None, *, max_body: int = 1 << 20,
              max_texts: int = 256) -> FastAPI:
    """The ASGI app; ``token=None`` serves probes and /metrics only (the metrics-only server)."""
    app = FastAPI(title="sentiloop", version=__version__, docs_url=None, redoc_url=None,
                  description="Continual-learning daemon for sentiment ensembles: probes, metrics, admin API.")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        return JSONResponse({"error": "invalid request: fix the fields below", "fields": fields}, status_code=422)

    @app.get("/healthz", tags=["probes"])
    def healthz() -> JSONResponse:
        ok, detail = ops.liveness()
        return JSONResponse({"status": "ok" if ok else "unavailable", **detail}, status_code=200 if ok else 503)

    @app.get("/readyz", tags=["probes"])
    def readyz() -> JSONResponse:
        ok, detail = ops.readiness()
        return JSONResponse({"status": "ok" if ok else "unavailable", **detail}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["probes"])
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if token is not None:
        _admin_routes(app, ops, token, max_texts)
    app.add_middleware(_BodyLimit, limit=max_body)
    return app


class _BearerAuth:
    """Check the token of every /v1/ request before anything else (routing, body parsing) runs.

    A middleware rather than a route dependency: FastAPI parses the body before dependencies, so an
    unauthenticated client would otherwise learn how its body was wrong (422) instead of 401.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not presented.strip():
                await _plain(send, 401, "a bearer token is required",
                             hint="send `Authorization: Bearer <token>`; the token is admin.token or data_dir/admin.token",
                             extra_headers=[(b"www-authenticate", b"Bearer")])
                return
            if not token_matches(self.token, presented.strip()):
                await _plain(send, 403, "the bearer token is wrong")
                return
        await self.app(scope, receive, send)


def _admin_routes(app: FastAPI, ops: Operations, token: str, max_texts: int) -> None:
    app.add_middleware(_BearerAuth, token=token)
    guarded = [Depends(HTTPBearer(auto_error=False, description="admin.token, admin.token_file or data_dir/admin.token"))]

    @app.get("/v1/status", tags=["admin"], dependencies=guarded)
    def status() -> dict[str, Any]:
        return ops.status()

    @app.post("/v1/predict", tags=["serving"], dependencies=guarded, response_model=PredictResponse,
              responses={409: {"description": "no champion yet"}, 413: {"description": "too many texts"}})
    def predict(body: PredictRequest) -> JSONResponse:
        texts = [body.text] if body.text is not None else list(body.texts or [])
        if len(texts) > max_texts:
            return JSONResponse({"error": f"{len(texts)} texts; at most {max_texts} per request (admin.max_predict_texts)"}, 413)
        return _answer(ops.predict(texts))

    @app.post("/v1/retrain", tags=["admin"], dependencies=guarded, status_code=202,
              responses={409: {"description": "a retrain runs, or no champion"}, 429: {"description": "refused by the policy"}})
    def retrain(body: RetrainRequest | None = None) -> JSONResponse:
        body = body or RetrainRequest()
        return _answer(ops.retrain(body.mode, body.reason, body.force))

    @app.post("/v1/pause", tags=["admin"], dependencies=guarded)
    def pause(body: PauseRequest | None = None) -> JSONResponse:
        return _answer(ops.pause((body or PauseRequest()).target))

    @app.post("/v1/resume", tags=["admin"], dependencies=guarded)
    def resume(body: PauseRequest | None = None) -> JSONResponse:
        return _answer(ops.resume((body or PauseRequest()).target))

    @app.post("/v1/reload", tags=["admin"], dependencies=guarded)
    def reload() -> JSONResponse:
        return _answer(ops.reload())

    @app.post("/v1/promote/{version}", tags=["admin"], dependencies=guarded)
    def promote(version: int, body: ReasonRequest | None = None) -> JSONResponse:
        if version < 1:
            return JSONResponse({"error": "version must be >= 1"}, 422)
        return _answer(ops.promote(version, (body.reason if body else None) or "promoted through the admin API"))

    @app.post("/v1/rollback", tags=["admin"], dependencies=guarded)
    def rollback(body: ReasonRequest | None = None) -> JSONResponse:
        return _answer(ops.rollback((body.reason if body else None) or "rolled back through the admin API"))
