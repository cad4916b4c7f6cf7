"""The admin API's bearer token: where it comes from, and how a request's token is checked.

Sources, first found wins: ``admin.token`` (config or ``SENTILOOP_ADMIN__TOKEN``), ``admin.token_file``,
else a token generated at daemon start and written to ``data_dir/admin.token`` with mode 0600, where
the CLI on the same machine reads it (as Jupyter does). The token is never logged.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from sentiloop.config import Settings
from sentiloop.errors import ConfigError

TOKEN_FILE = "admin.token"


def token_path(settings: Settings) -> Path:
    return settings.admin.token_file or settings.data_dir / TOKEN_FILE


def configured_token(settings: Settings) -> str | None:
    """The token from config or its file, without creating one (what the CLI uses)."""
    if settings.admin.token is not None:
        return settings.admin.token.get_secret_value()
    path = token_path(settings)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"admin token file {path} cannot be read: {exc}") from None
    return token or None


def daemon_token(settings: Settings) -> str:
    """The token the daemon accepts; generated (and written 0600) when none is configured."""
    token = configured_token(settings)
    if token:
        if len(token) < 16:
            raise ConfigError("admin.token: at least 16 characters are needed (e.g. `openssl rand -hex 32`)")
        return token
    if settings.admin.token_file is not None:
        raise ConfigError(f"admin.token_file {settings.admin.token_file} is missing or empty")
    token = secrets.token_urlsafe(32)
    path = token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)  # an older file may have had other bits
    return token


def token_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison, so the answer's timing says nothing about the token."""
    return hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8"))
