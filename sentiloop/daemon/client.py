"""How the CLI finds and talks to a running daemon (standard library only: the CLI starts fast).

A daemon writes ``data_dir/daemon.json`` (its pid and the admin URL) when its servers are up and
removes it when it stops; a file whose pid is gone is stale and ignored. The token is read the way
the daemon resolves it (``admin.token``, ``admin.token_file``, ``data_dir/admin.token``).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sentiloop.config import Settings
from sentiloop.daemon.auth import configured_token
from sentiloop.errors import SentiloopError
from sentiloop.files import atomic_write_json

RUNTIME_FILE = "daemon.json"


def runtime_path(settings: Settings) -> Path:
    return settings.data_dir / RUNTIME_FILE


def write_runtime(settings: Settings, admin_url: str | None, metrics_url: str | None) -> None:
    atomic_write_json(runtime_path(settings), {"pid": os.getpid(), "admin_url": admin_url, "metrics_url": metrics_url,
                                              "started_ms": int(time.time() * 1000)})


def remove_runtime(settings: Settings) -> None:
    path = runtime_path(settings)
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def running_admin_url(settings: Settings) -> str | None:
    """The admin URL of the daemon running on this data_dir, or None when none runs."""
    try:
        runtime = json.loads(runtime_path(settings).read_text(encoding="utf-8"))
        os.kill(int(runtime["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no file, unreadable, or the process is gone (a stale file after kill -9)
    url = runtime.get("admin_url")
    return str(url) if url else None


def call(url: str, token: str | None, method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    """One request to the admin API; returns (status, JSON body) for any HTTP answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": exc.reason}
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise SentiloopError(f"the daemon at {url} does not answer ({exc}); is it still starting or stuck?") from None


def daemon_request(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]] | None:
    """(status, body) from the running daemon, or None when no daemon runs on this data_dir."""
    url = running_admin_url(settings)
    if url is None:
        return None
    return call(url, configured_token(settings), method, path, body)
