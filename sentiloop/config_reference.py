"""The configuration reference, generated from the config models (README section; `sentiloop config reference`).

One row per key: dotted path, type, default, and the field's description (or its section's docstring
line for keys without one). The README holds the output between two markers, and a test fails when
it is stale, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from sentiloop.config import Settings

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("NoneType", "null").replace("sentiloop.config.", "")
    return text.replace("Literal", "one of ").replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    defaults = model()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, f"{path}."))
            continue
        value = getattr(defaults, name)
        if hasattr(value, "get_secret_value"):
            shown = "(secret)"
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            shown = json.dumps([v.model_dump(mode="json") for v in value])
        elif isinstance(value, BaseModel):
            shown = json.dumps(value.model_dump(mode="json"))
        else:
            shown = json.dumps(value, default=str)
        description = (info.description or "").replace("|", "\\|")
        rows.append((path, _type_name(annotation), shown.replace("|", "\\|"), description))
    return rows


def reference_markdown() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{path}` | {kind} | `{default}` | {meaning} |" for path, kind, default, meaning in _rows(Settings)]
    return "\n".join(lines)


def readme_section() -> str:
    return f"{START}\n{reference_markdown()}\n{END}"
