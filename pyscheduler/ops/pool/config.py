"""What a pool runs: `GroupConfig` (one group of worker processes on its queues) and
`PoolConfig` (the groups, the Redis URL, how often to look), each checked when made."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field

from ...store.connection import resolve_url
from ...store.keys import validate_queue_name

DEFAULT_CHECK_INTERVAL = 0.5
DEFAULT_TARGET_LATENCY = 1.0
DEFAULT_COOLDOWN = 30.0

GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


@dataclass
class GroupConfig:
    """A group of worker processes dedicated to `queues` (taken in that order)."""

    name: str
    queues: list[str]
    min: int = 1
    max: int = 1
    concurrency: int = 1  # jobs each process runs at once (`worker --concurrency`)
    target_latency: float = DEFAULT_TARGET_LATENCY  # seconds a ready job should wait at most
    cooldown: float = DEFAULT_COOLDOWN  # seconds without backlog before scaling down
    lease: float | None = None  # `worker --lease`
    strict: bool = False  # `worker --strict`
    imports: list[str] = field(default_factory=list)  # `worker --import`
    auto_load: bool = False  # `worker --auto-load`

    def __post_init__(self) -> None:
        if isinstance(self.queues, str):
            self.queues = [self.queues]
        self.queues = list(self.queues)
        if not self.queues:
            raise ValueError(f"group {self.name}: needs at least one queue")
        for queue in self.queues:
            validate_queue_name(queue)
        if not isinstance(self.name, str) or not GROUP_NAME_RE.match(self.name):
            raise ValueError(
                f"invalid group name {self.name!r}: use letters, digits, '_', '.', '+', '-'"
            )
        for what in ("min", "max", "concurrency"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"group {self.name}: {what} must be an integer, not {value!r}")
        if self.min < 0 or self.max < 1 or self.min > self.max:
            raise ValueError(
                f"group {self.name}: needs 0 <= min <= max and max >= 1"
                f" (got min {self.min}, max {self.max})"
            )
        if self.concurrency < 1:
            raise ValueError(f"group {self.name}: concurrency must be at least 1")
        for what in ("target_latency", "cooldown", "lease"):
            value = getattr(self, what)
            if value is None and what == "lease":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"group {self.name}: {what} must be seconds, not {value!r}")
            if not math.isfinite(value) or value < 0 or (value == 0 and what != "cooldown"):
                raise ValueError(f"group {self.name}: {what} out of range: {value!r}")
            setattr(self, what, float(value))
        if isinstance(self.imports, str):
            self.imports = [self.imports]
        self.imports = list(self.imports)
        if not all(isinstance(m, str) and m for m in self.imports):
            raise ValueError(f"group {self.name}: import takes module names: {self.imports!r}")
        for what in ("strict", "auto_load"):
            if not isinstance(getattr(self, what), bool):
                raise ValueError(f"group {self.name}: {what} must be true or false")

    def worker_command(self) -> list[str]:
        """The command line of one of this group's worker processes (the URL goes by env)."""
        args = [sys.executable, "-m", "pyscheduler", "worker", *self.queues]
        args += ["--concurrency", str(self.concurrency)]
        if self.lease is not None:
            args += ["--lease", str(self.lease)]
        if self.strict:
            args.append("--strict")
        for module in self.imports:
            args += ["--import", module]
        if self.auto_load:
            args.append("--auto-load")
        return args

    def describe(self) -> str:
        return (
            f"group {self.name} on {', '.join(self.queues)}: {self.min}-{self.max} processes,"
            f" concurrency {self.concurrency}, target latency {self.target_latency:g} s,"
            f" cooldown {self.cooldown:g} s"
        )


@dataclass
class PoolConfig:
    groups: list[GroupConfig]
    url: str | None = None  # None: $REDIS_URL, else the local default
    check_interval: float = DEFAULT_CHECK_INTERVAL

    def __post_init__(self) -> None:
        self.groups = list(self.groups)
        if not self.groups:
            raise ValueError("a pool needs at least one group")
        names = [g.name for g in self.groups]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"group names must be unique: {', '.join(duplicates)}")
        if not (
            isinstance(self.check_interval, int | float)
            and math.isfinite(self.check_interval)
            and self.check_interval > 0
        ):
            raise ValueError(f"check_interval must be positive seconds: {self.check_interval!r}")

    @property
    def resolved_url(self) -> str:
        return resolve_url(self.url)
