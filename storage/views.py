"""`to_dict`: the JSON form of a domain result, shared by the admin API and the CLI so both print the same.

Money stays exact: a field `<name>_nano` (integer nano-USD) is shown as `<name>_usd` (a decimal string) and
`<name>_nano`. Ids, times and decimals stay typed; the JSON encoder (msgspec) renders them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pricing.money import format_usd


def to_dict(obj: Any) -> Any:
    """A dataclass (recursively, through lists) as a dict; other values unchanged."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name.endswith("_nano") and (value is None or isinstance(value, int)):
                stem = f.name[: -len("_nano")]
                out[f"{stem}_usd"] = None if value is None else format_usd(int(value))
                out[f.name] = value
            else:
                out[f.name] = to_dict(value)
        return out
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj
