"""``--key``: which text of a row is compared. A field name, or a template of fields.

``question`` takes the field ``question``; ``{question} {answer}`` joins two fields with a space;
``meta.source`` (in either form) reaches into nested objects. Strings are used as they are, numbers
and booleans as ``str()`` gives them, lists and objects as compact JSON; a field that is absent or
``null`` makes the row's key missing (reported, with its file and line).
"""

from __future__ import annotations

import json
import re
from typing import Any

_FIELD = re.compile(r"\{([^{}]*)\}")
_MISSING = object()


def _lookup(obj: Any, path: str) -> Any:
    if path in obj:  # a field whose name has a dot in it wins over nesting
        return obj[path]
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


class KeyTemplate:
    """A compiled ``--key``: ``render(row) -> (text, missing_field_or_None)``."""

    def __init__(self, spec: str):
        if not spec or not spec.strip():
            raise ValueError("--key is empty: give a field name or a template like '{question} {answer}'")
        self.spec = spec
        if "{" in spec or "}" in spec:
            self.parts: list[str] = _FIELD.split(spec)  # literal, field, literal, field, ..., literal
            self.fields = self.parts[1::2]
            if any("{" in lit or "}" in lit for lit in self.parts[0::2]):
                raise ValueError(f"--key template {spec!r} has unbalanced braces")
            if not self.fields or any(not f.strip() for f in self.fields):
                raise ValueError(f"--key template {spec!r} names an empty field in braces")
        else:
            self.parts = ["", spec, ""]
            self.fields = [spec]

    def render(self, obj: dict) -> tuple[str, str | None]:
        out = []
        for i, part in enumerate(self.parts):
            if i % 2 == 0:
                out.append(part)
                continue
            value = _lookup(obj, part)
            if value is _MISSING or value is None:
                return "", part
            out.append(_as_text(value))
        return "".join(out), None

    def __repr__(self) -> str:
        return f"KeyTemplate({self.spec!r})"
