"""Child processes that end with the process that started them (Linux's PR_SET_PDEATHSIG).

A worker's executors, a pool's workers and a private engine must not outlive their parent:
an executor that did would run a job whose lease nobody renews, a pool worker would go on
unsupervised, an engine would leak a server. Elsewhere than on Linux this does nothing, and
the leases, the pool's own shutdown and atexit hooks still apply.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from functools import cache

_PR_SET_PDEATHSIG = 1


@cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once; call this in the parent before forking so that the child
    (which may run between fork and exec) does no library lookup of its own."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def prepare() -> None:
    """Look prctl up now, in the parent (see `_prctl`)."""
    _prctl()


def signal_on_parent_death(signum: int) -> None:
    """In a child: ask the kernel to send `signum` to this process when its parent dies."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signum)
