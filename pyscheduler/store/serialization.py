"""Payloads and results are JSON, never pickle.

JSON text travels as UTF-8, so a string with a lone surrogate (which Python allows, and
`json` writes as is with `ensure_ascii=False`) cannot be carried: it is refused with the place
it was found. Text read back from Redis is untrusted: bytes that are not UTF-8, JSON that is
not well formed or nested too deep raise ValueError with a message naming what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..exceptions import PayloadNotJSON, PayloadTooLarge

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_CARRIED = "pass str, int, float, bool, None, lists and dicts with string keys"


def _surrogate(text: str) -> int:
    """The index of the first lone surrogate in `text`, or -1."""
    if text.isascii():  # the common case, and a fast one
        return -1
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return exc.start
    return -1


def _find_bad(value: Any, path: str) -> str | None:
    """Where the first value JSON cannot carry is and why, for a message that names it."""
    if isinstance(value, str):
        at = _surrogate(value)
        return None if at < 0 else f"{path} has a lone surrogate ({value[at]!r} at index {at})"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        if value == value and value not in (float("inf"), float("-inf")):
            return None
        return f"{path} is not a finite number"
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_bad(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} key {key!r} is not a string"
            found = _find_bad(key, f"{path} key") or _find_bad(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return f"{path} is {type(value).__name__}"


def encode_payload(args: Sequence[Any], kwargs: Mapping[str, Any], max_bytes: int) -> str:
    """JSON text of a call; raises PayloadNotJSON or PayloadTooLarge."""
    # Checked before encoding: the encoder would turn non-string dict keys into strings.
    try:
        bad = _find_bad(list(args), "args") or _find_bad(dict(kwargs), "kwargs")
        text = "" if bad else _encoder.encode({"args": list(args), "kwargs": dict(kwargs)})
    except RecursionError:
        bad = "the payload is circular or nested too deep"
    except (TypeError, ValueError):
        bad = "the payload"
    if bad:
        raise PayloadNotJSON(f"{bad}, which JSON cannot carry: {_CARRIED}")
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLarge(f"payload is {size} bytes, over the limit of {max_bytes} bytes")
    return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


# One decoder for every call: json.loads with an option builds a new one each time, which
# costs more than decoding a small payload.
_decoder = json.JSONDecoder(parse_constant=_no_constant)


def decode_json(text: str | bytes, what: str, error: type[ValueError] = ValueError) -> Any:
    """Parse JSON read from Redis; raises `error` saying what is wrong with `what`."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise error(
                f"{what} is not valid UTF-8 (byte {text[exc.start]:#04x} at offset {exc.start})"
            ) from None
    try:
        return _decoder.decode(text)
    except RecursionError:
        raise error(f"{what} is nested too deep to decode") from None
    except ValueError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None


def decode_payload(text: str | bytes) -> tuple[list[Any], dict[str, Any]]:
    """Args and kwargs of a stored payload; raises ValueError when it is malformed."""
    data = decode_json(text, "the payload")
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    args, kwargs = data.get("args", []), data.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError("payload args must be a list and kwargs an object")
    return args, kwargs


def encode_result(value: Any, what: str = "the handler returned") -> str:
    """JSON text of a handler's return value (or, with `what`, of a checkpoint); raises
    PayloadNotJSON naming what JSON cannot carry."""
    try:
        text = _encoder.encode(value)
    except RecursionError:
        raise PayloadNotJSON(f"{what} a value nested too deep to encode as JSON") from None
    except (TypeError, ValueError):
        raise PayloadNotJSON(
            f"{what} {type(value).__name__}, which is not JSON-serialisable" + _where(value)
        ) from None
    at = _surrogate(text)
    if at >= 0:
        raise PayloadNotJSON(
            f"{what} a string with a lone surrogate, which JSON cannot carry in UTF-8"
            + _where(value)
        )
    return text


def _where(value: Any) -> str:
    try:
        found = _find_bad(value, "value")
    except RecursionError:
        return ""
    return f" ({found})" if found else ""


def decode_result(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)
