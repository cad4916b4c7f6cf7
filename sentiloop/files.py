"""Small file helpers shared by snapshots and checkpoints: atomic writes (files and directories) and hashes."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sentiloop.errors import CheckpointError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename: readers never see half a file.

    The file is created 0600 (mkstemp) and stays so: anything sentiloop writes may hold data or
    settings that are nobody else's business.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temp directory beside ``target``; when the block succeeds it becomes ``target``.

    A crash at any point leaves the old ``target`` or the new one, never none: a new directory is one
    rename; replacing one is an atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``). Where the
    kernel or filesystem has no exchange, the old directory is first renamed aside to ``.<name>.old``
    and :func:`restore_directory` (run by every checkpoint read) puts it back if the process died
    between the two renames. A failed block removes the temp directory and leaves ``target`` as it was.
    ``replace=False`` refuses an existing ``target`` (checkpoints that are never overwritten).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    restore_directory(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if not target.exists():
            tmp.rename(target)
        elif not replace:
            raise CheckpointError(f"{target} already exists; it is never overwritten")
        elif _exchange(tmp, target):
            shutil.rmtree(tmp)  # now holds the old contents
        else:
            aside = _aside(target)
            shutil.rmtree(aside, ignore_errors=True)
            target.rename(aside)
            tmp.rename(target)
            shutil.rmtree(aside)
        _fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore_directory(target: Path) -> None:
    """Undo a replacement interrupted between its two renames (see :func:`atomic_directory`)."""
    aside = _aside(target)
    if aside.is_dir():
        if target.exists():
            shutil.rmtree(aside, ignore_errors=True)  # the new one made it: the old is garbage
        else:
            aside.rename(target)


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@lru_cache(maxsize=1)
def _renameat2() -> Any:
    """libc's renameat2, looked up once (None where libc has none: non-Linux, old glibc)."""
    libc_name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the platform or filesystem cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, ensure_ascii=False, indent=1, sort_keys=False).encode("utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path, missing: str | None = None) -> Any:
    """Parse a JSON file; a missing or unreadable file is a CheckpointError that names it.

    ``missing`` is the message for an absent file (say what to do); by default it names the path.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(missing or f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable: {exc}") from None
