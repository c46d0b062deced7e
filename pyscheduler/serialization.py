"""Payloads and results are JSON, never pickle."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .exceptions import PayloadNotJSON, PayloadTooLarge

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _find_bad(value: Any, path: str) -> str | None:
    """The path of the first value JSON cannot carry, for a message that names it."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if value == value and value not in (float("inf"), float("-inf")) else path
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_bad(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} key {key!r}"
            found = _find_bad(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return path


def encode_payload(args: Sequence[Any], kwargs: Mapping[str, Any], max_bytes: int) -> str:
    """JSON text of a call; raises PayloadNotJSON or PayloadTooLarge."""
    # Checked before encoding: the encoder would turn non-string dict keys into strings.
    try:
        bad = _find_bad(list(args), "args") or _find_bad(dict(kwargs), "kwargs")
        text = "" if bad else _encoder.encode({"args": list(args), "kwargs": dict(kwargs)})
    except (TypeError, ValueError, RecursionError):  # a circular or too deeply nested value
        bad = "payload"
    if bad:
        raise PayloadNotJSON(
            f"{bad} is not JSON-serialisable: pass str, int, float, bool, None, lists and"
            " dicts with string keys"
        )
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLarge(f"payload is {size} bytes, over the limit of {max_bytes} bytes")
    return text


def decode_payload(text: str) -> tuple[list[Any], dict[str, Any]]:
    """Args and kwargs of a stored payload; raises ValueError when it is malformed."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    args, kwargs = data.get("args", []), data.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError("payload args must be a list and kwargs an object")
    return args, kwargs


def encode_result(value: Any) -> str:
    """JSON text of a handler's return value; raises PayloadNotJSON."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError):
        raise PayloadNotJSON(
            f"the handler returned {type(value).__name__}, which is not JSON-serialisable"
        ) from None


def decode_result(text: str | None) -> Any:
    return None if text is None else json.loads(text)
