"""What commands print: rich consoles, JSON, short durations and times, progress bars."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from ...client.queue import QueueLimits

PROGRESS_MIN = 1000  # show a progress bar from this many jobs on (on a terminal)


def stdout_console() -> Console:
    """Rich output on stdout; wide when piped, so ids are never cut."""
    wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(highlight=False, width=200 if wide else None)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def age(seconds: float | None) -> str:
    """A short human duration: 0.4s, 12.0s, 3m05s, 2h10m, 4d03h."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, mins = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{mins:02d}m"
    days, hrs = divmod(hours, 24)
    return f"{days}d{hrs:02d}h"


def when(ms: int | None, now_ms: int) -> Text:
    if ms is None:
        return Text("-")
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return Text(f"{stamp} ({age((now_ms - ms) / 1000)} ago)")


def as_json_text(value: Any) -> Text:
    return Text(json.dumps(value, ensure_ascii=False, default=str))


def error_summary(error: str | None) -> str:
    """The line of an error text that says what happened (a traceback's last line)."""
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def limits_text(limits: QueueLimits) -> str:
    parts = []
    if limits.concurrency is not None:
        parts.append(f"concurrency {limits.concurrency}")
    if limits.rate is not None and limits.period is not None:
        parts.append(f"rate {limits.rate}/{limits.period:g}s")
    return ", ".join(parts) or "-"


@contextmanager
def progress_bar(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long work on a terminal; yields `advance(n)`."""
    console = stderr_console()
    show = console.is_terminal and (total is None or total >= PROGRESS_MIN)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not show,
    ) as progress:
        task_id = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task_id, n)
