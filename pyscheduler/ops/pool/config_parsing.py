"""Pool configurations from text: a group spec on the command line (`parse_group_spec`, see
`SPEC_SYNTAX`) or a TOML file (`load_config`, see `CONFIG_EXAMPLE`)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ...exceptions import PySchedulerError
from .config import DEFAULT_CHECK_INTERVAL, GroupConfig, PoolConfig

SPEC_SYNTAX = """\
[NAME=]QUEUE[,QUEUE...][:MIN-MAX|:N][:OPTION=VALUE[,OPTION=VALUE...]]

  NAME      the group's name (default: its queues joined by '+')
  QUEUE     the queues its workers take jobs from, in this order
  MIN-MAX   how many worker processes (default 1-1); N alone means exactly N
  OPTION    concurrency (or c), target (or target_latency, seconds), cooldown (seconds),
            lease (seconds)

  fast=fast,fast2:1-8            group "fast" on queues fast and fast2, 1 to 8 processes
  slow:1-2:concurrency=4,cooldown=60
  reports:2"""

CONFIG_EXAMPLE = """\
url = "redis://127.0.0.1:6379/0"   # optional; --url wins, then this, then $REDIS_URL
check_interval = 0.5               # optional, seconds

[defaults]                         # optional: for every group that does not set its own
cooldown = 30.0
target_latency = 1.0

[groups.fast]
queues = ["fast", "fast2"]         # taken in this order
min = 1
max = 8
concurrency = 4                    # jobs at once per process
target_latency = 0.5               # seconds a ready job should wait at most

[groups.slow]
queues = ["slow"]
min = 1
max = 2
lease = 30.0                       # worker options: lease, strict, import, auto_load
import = ["myapp.reports"]"""


_GROUP_KEYS = {f.name for f in fields(GroupConfig)} - {"name", "imports"}
_SPEC_OPTIONS = {
    "c": "concurrency",
    "concurrency": "concurrency",
    "target": "target_latency",
    "target_latency": "target_latency",
    "cooldown": "cooldown",
    "lease": "lease",
}


def _number(value: str, what: str, spec: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"group spec {spec!r}: {what} must be a number, not {value!r}") from None
    return number


def _integer(value: str, what: str, spec: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"group spec {spec!r}: {what} must be an integer, not {value!r}") from None


def parse_group_spec(spec: str, defaults: Mapping[str, Any] | None = None) -> GroupConfig:
    """A `GroupConfig` from a command-line spec (see `SPEC_SYNTAX`), e.g. "fast=fast,fast2:1-8".

    `defaults` fills in what the spec leaves out (e.g. {"cooldown": 60}).
    """
    text = spec.strip()
    name: str | None = None
    head, *parts = text.split(":")
    if "=" in head:
        name, _, head = head.partition("=")
        name = name.strip()
    queues = [q.strip() for q in head.split(",") if q.strip()]
    if not queues:
        raise ValueError(
            f"group spec {spec!r}: no queue given (syntax: {SPEC_SYNTAX.splitlines()[0]})"
        )
    values: dict[str, Any] = dict(defaults or {})
    if parts and "=" not in parts[0]:
        size = parts.pop(0).strip()
        low, dash, high = size.partition("-")
        values["min"] = _integer(low, "min", spec)
        values["max"] = _integer(high, "max", spec) if dash else values["min"]
    if len(parts) > 1:
        raise ValueError(f"group spec {spec!r}: too many ':' parts")
    for option in parts[0].split(",") if parts else []:
        key, eq, value = option.partition("=")
        key = key.strip().lower()
        if not eq or key not in _SPEC_OPTIONS:
            raise ValueError(
                f"group spec {spec!r}: unknown option {option!r}"
                f" (one of {', '.join(sorted(_SPEC_OPTIONS))})"
            )
        target = _SPEC_OPTIONS[key]
        values[target] = (
            _integer(value, target, spec)
            if target == "concurrency"
            else _number(value, target, spec)
        )
    values.setdefault("max", max(1, int(values.get("min", 1))))
    return GroupConfig(name=name or "+".join(queues), queues=queues, **values)


def _group_from_table(
    name: str, table: Mapping[str, Any], defaults: Mapping[str, Any]
) -> GroupConfig:
    values = {**defaults, **table}
    if "import" in values:
        values["imports"] = values.pop("import")
    unknown = sorted(set(values) - _GROUP_KEYS - {"imports"})
    if unknown:
        raise ValueError(
            f"group {name}: unknown setting {', '.join(unknown)}"
            f" (known: {', '.join(sorted(_GROUP_KEYS | {'import'}))})"
        )
    if "queues" not in values:
        values["queues"] = [name]
    if "max" not in values:
        low = values.get("min", 1)
        # A bad min is GroupConfig's to report, with its name.
        values["max"] = max(1, low) if isinstance(low, int) and not isinstance(low, bool) else 1
    return GroupConfig(name=name, **values)


def load_config(
    path: str | os.PathLike[str], defaults: Mapping[str, Any] | None = None
) -> PoolConfig:
    """A `PoolConfig` from a TOML file (see `CONFIG_EXAMPLE`).

    `defaults` are group settings under the file's own `[defaults]` (e.g. from the command
    line). A group without `queues` takes the queue named like the group.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"url", "check_interval", "defaults", "groups"})
    if unknown:
        raise ValueError(
            f"{path}: unknown top-level setting {', '.join(unknown)}"
            " (known: url, check_interval, [defaults], [groups.NAME])"
        )
    url = data.get("url")
    if url is not None and not isinstance(url, str):  # checked as a URL by the pool
        raise ValueError(f"{path}: url must be a string, not {url!r}")
    file_defaults = data.get("defaults", {})
    groups_table = data.get("groups", {})
    if not isinstance(file_defaults, dict) or not isinstance(groups_table, dict):
        raise ValueError(f"{path}: [defaults] and [groups.NAME] must be tables")
    merged = {**(defaults or {}), **file_defaults}
    groups = []
    for name, table in groups_table.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: groups.{name} must be a table")
        try:
            groups.append(_group_from_table(name, table, merged))
        except (TypeError, ValueError, PySchedulerError) as exc:
            raise ValueError(f"{path}: {exc}") from None
    try:
        return PoolConfig(
            groups=groups,
            url=data.get("url"),
            check_interval=data.get("check_interval", DEFAULT_CHECK_INTERVAL),
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
