"""Reading and writing the sizes people type and read: ``128K`` tokens, ``bf16``, ``45.9B``, ``40 GiB``.

Token suffixes are binary (``K`` = 1024, ``M`` = 1024**2), so ``64K`` is 65,536 and ``1M`` is 1,048,576,
the lengths that context windows are quoted in.
"""

from __future__ import annotations

import re

_SUFFIX = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*$")

#: Bytes per element of the dtypes a KV cache is kept in, under the names people use for them.
DTYPE_BYTES = {
    "fp32": 4,
    "float32": 4,
    "float": 4,
    "bf16": 2,
    "bfloat16": 2,
    "fp16": 2,
    "float16": 2,
    "half": 2,
    "fp8": 1,
    "float8": 1,
    "int8": 1,
}


def parse_count(text: str | int) -> int:
    """``"128K"`` -> 131072, ``"1M"`` -> 1048576, ``"4096"`` -> 4096 (binary suffixes, positive)."""
    if isinstance(text, int):
        value = text
    else:
        m = _COUNT.match(str(text))
        if not m:
            raise ValueError(f"cannot read {text!r} as a token count; write e.g. 131072, 128K or 1M")
        number, suffix = float(m.group(1)), _SUFFIX[m.group(2).upper()]
        value = number * suffix
        if value != int(value):
            raise ValueError(f"{text!r} is not a whole number of tokens")
        value = int(value)
    if value <= 0:
        raise ValueError(f"a token count must be positive, got {text!r}")
    return value


def parse_counts(text: str) -> list[int]:
    """A comma-separated list of token counts, e.g. ``"1K,64K,100K"``."""
    items = [s for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"no lengths in {text!r}; write e.g. 1K,64K,100K")
    return [parse_count(s) for s in items]


def dtype_bytes(name: str) -> int:
    """Bytes per element of a dtype name (``bf16``, ``fp16``, ``fp32``, ``fp8`` and their long names)."""
    try:
        return DTYPE_BYTES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPE_BYTES)}") from None


def format_count(n: float, digits: int = 2) -> str:
    """``456_090_000_000`` -> ``456.09B`` (decimal units: parameters and FLOPs are quoted that way)."""
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{unit}"
    return f"{n:.0f}"


def format_tokens(n: int) -> str:
    """``65536`` -> ``64K``, ``1048576`` -> ``1M``, other counts as plain integers."""
    for unit, scale in (("M", 1024**2), ("K", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def format_bytes(n: float) -> str:
    """Binary units, as memory is sold: ``42949672960`` -> ``40.00 GiB``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"
