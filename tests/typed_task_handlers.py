"""Handlers for tests/test_typed_tasks.py: `@task` functions enqueued through `.enqueue`."""

from __future__ import annotations

import asyncio

from pyscheduler import task


@task
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@task(retries=2)
async def greeting(name: str) -> str:
    await asyncio.sleep(0)
    return f"hello {name}"


@task(name="typed:renamed")
def renamed(text: str) -> str:
    return text.upper()


def multiply(a: int, b: int) -> int:
    """Left plain: a test registers it with a default queue, which needs its connection."""
    return a * b
