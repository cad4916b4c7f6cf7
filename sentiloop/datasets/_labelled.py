"""Users' own labelled data: JSONL or CSV with ``text``, ``label`` and optional ``domain``/``id``.

Labels are names from the configured label set or integer indices into it. Bad rows are reported
together (file, line, field), so one run shows everything to fix; other columns are ignored.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from sentiloop.datasets._records import LabelLike, Record, label_names
from sentiloop.errors import DataError

MAX_DOMAIN = 64
MAX_REPORTED = 20
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}


class _RowError(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


def _label_index(value: Any, names: list[str]) -> int:
    if isinstance(value, bool) or value is None:
        raise _RowError("label", f"must be a label name or index, got {json.dumps(value)}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        stripped = value.strip()
        if stripped in names:
            return names.index(stripped)
        try:
            value = int(stripped)
        except ValueError:
            raise _RowError("label", f"{stripped[:64]!r} is not one of {', '.join(names)} (or an index)") from None
    if isinstance(value, int):
        if 0 <= value < len(names):
            return value
        raise _RowError("label", f"index {value} is outside 0..{len(names) - 1}")
    raise _RowError("label", f"must be a label name or index, got {type(value).__name__}")


def _record(row: dict[str, Any], names: list[str], default_id: str, default_domain: str) -> Record:
    text = row.get("text")
    if text is None:
        raise _RowError("text", "is missing")
    if not isinstance(text, str):
        raise _RowError("text", f"must be a string, got {type(text).__name__}")
    if not text.strip():
        raise _RowError("text", "is empty")
    if "label" not in row or row["label"] in (None, ""):
        raise _RowError("label", "is missing")
    label = _label_index(row["label"], names)
    domain = row.get("domain")
    if domain in (None, ""):
        domain = default_domain
    elif not isinstance(domain, str) or len(domain) > MAX_DOMAIN:
        raise _RowError("domain", f"must be a string of at most {MAX_DOMAIN} characters")
    record_id = row.get("id")
    if record_id in (None, ""):
        record_id = default_id
    elif isinstance(record_id, (str, int)) and not isinstance(record_id, bool):
        record_id = str(record_id)
    else:
        raise _RowError("id", f"must be a string or integer, got {type(record_id).__name__}")
    return Record(id=record_id, text=text.strip(), label=label, domain=domain)


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | _RowError]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            yield number, _RowError(None, f"is not valid JSON ({exc})")
            continue
        yield number, row if isinstance(row, dict) else _RowError(None, f"is a JSON {type(row).__name__}, not an object")


def _csv_rows(text: str, delimiter: str) -> Iterator[tuple[int, dict[str, Any] | _RowError]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        return
    missing = [name for name in ("text", "label") if name not in header]
    if missing:
        yield 1, _RowError(missing[0], f"header has no {' or '.join(missing)} column (columns: {', '.join(header)})")
        return
    start = reader.line_num + 1
    for cells in reader:
        number, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            yield number, _RowError(None, f"has {len(cells)} fields, the header has {len(header)}")
            continue
        yield number, dict(zip(header, cells))


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 (byte {data[exc.start]:#04x}); save the file as UTF-8") from None


def load_labelled_file(
    path: Path | str,
    labels: Sequence[LabelLike | str] | None = None,
    *,
    default_domain: str = "unknown",
    format: Literal["jsonl", "csv", "tsv"] | None = None,
) -> list[Record]:
    """Read a labelled JSONL/CSV/TSV file into Records, in file order.

    ``labels`` is the label set (Label objects or names; default: the 5-class set). The format comes
    from the suffix unless given. Rows without an ``id`` get ``<file name>:<line>``. Raises
    DataError listing the bad rows (file, line, field) if any row is invalid.
    """
    path = Path(path)
    names = label_names(labels)
    kind = format or FORMATS.get(path.suffix.lower())
    if kind not in ("jsonl", "csv", "tsv"):
        raise DataError(f"{path}: unknown format {path.suffix!r}; use .jsonl, .csv or .tsv (or pass format=)")
    try:
        text = _decode(path.read_bytes(), path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = _jsonl_rows(text) if kind == "jsonl" else _csv_rows(text, "," if kind == "csv" else "\t")
    records: list[Record] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for number, row in rows:
        try:
            if isinstance(row, _RowError):
                raise row
            record = _record(row, names, f"{path.name}:{number}", default_domain)
            if record.id in first_line:
                raise _RowError("id", f"{record.id!r} repeats line {first_line[record.id]}")
            first_line[record.id] = number
            records.append(record)
        except _RowError as exc:
            where = f"line {number}" + (f", field {exc.field!r}" if exc.field else "")
            problems.append(f"{where}: {exc}")
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{path}: {len(problems)} bad row(s):\n  {shown}{more}")
    if not records:
        raise DataError(f"{path}: no rows (expected {kind.upper()} with text and label)")
    return records
