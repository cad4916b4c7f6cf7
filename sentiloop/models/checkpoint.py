"""Member checkpoints on disk: safetensors weights, JSON config/vocabulary, and a sha256 manifest.

``write_member_dir`` writes into a temp directory and renames it into place, so a crash never
leaves half a checkpoint; ``verify_member_dir`` refuses any file whose hash or size differs from the
manifest (tampering, truncation) before a single byte is deserialised. No pickle anywhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sentiloop.errors import CheckpointError
from sentiloop.files import atomic_directory, read_json, restore_directory, sha256_file

MANIFEST = "manifest.json"
FORMAT = "sentiloop.member/1"


def write_manifest(directory: Path, kind: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash every file in ``directory`` (recursively, except the manifest) into ``manifest.json``."""
    files = {
        str(path.relative_to(directory)): {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    manifest = {"format": FORMAT, "kind": kind, "created_ms": int(time.time() * 1000), "files": files, **(extra or {})}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def write_member_dir(directory: Path, kind: str, write_files: Callable[[Path], None], extra: dict[str, Any] | None = None) -> None:
    """Atomically create (or replace) ``directory`` with the files ``write_files`` puts in it, plus a manifest."""
    with atomic_directory(directory) as tmp:
        write_files(tmp)
        write_manifest(tmp, kind, extra)


def verify_member_dir(directory: Path, kind: str | None = None) -> dict[str, Any]:
    """Check the manifest and every file's size and sha256; return the manifest."""
    restore_directory(directory)
    path = directory / MANIFEST
    manifest = read_json(path, f"{directory} is not a sentiloop checkpoint: {MANIFEST} is missing")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {manifest.get('format')!r}")
    if kind is not None and manifest.get("kind") != kind:
        raise CheckpointError(f"{directory} holds a {manifest.get('kind')!r} member, not {kind!r}")
    for name, expected in manifest.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            raise CheckpointError(f"{file} is listed in the manifest but missing")
        if file.stat().st_size != expected["bytes"]:
            raise CheckpointError(f"{file} has {file.stat().st_size} bytes, the manifest says {expected['bytes']} (truncated?)")
        if sha256_file(file) != expected["sha256"]:
            raise CheckpointError(f"{file} fails its sha256 check: it was modified after it was written")
    return manifest


def write_json(directory: Path, name: str, data: Any) -> None:
    (directory / name).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
