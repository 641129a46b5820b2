"""Keeping sessions out of forked children.

Worker servers (gunicorn ``--preload``, uWSGI, Celery prefork) import the
application and then fork, so a pool warmed at import is copied into every worker
along with its sockets. Two processes writing to one SMTP session corrupt it, so a
child must start with an empty pool and never write a byte to an inherited socket.

Two mechanisms, because neither is enough alone: a hook that Python runs in the
child after ``os.fork()``, and a process-id check on every checkout and checkin for
forks made by C code that skips Python's hooks (uWSGI without
``py-call-osafterfork``).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol

from ._smtp import let_go_of_inherited


class Forkable(Protocol):
    def _after_fork(self) -> None: ...


_live: weakref.WeakSet[Forkable] = weakref.WeakSet()

# Taken only to reset a pool in a child whose fork skipped the hook, never in the
# process that created the pool, so no thread can hold it at the moment of a fork.
_reset_lock = threading.Lock()


def track(pool: Forkable) -> None:
    """Reset this pool in every child forked from now on."""
    _live.add(pool)


def reset(pool: Forkable) -> None:
    """Reset a pool found in a child whose fork skipped the hook.

    ``_after_fork`` checks the process id again under this lock, so a pool is
    reset once even if several threads of the child find it at the same time.
    """
    with _reset_lock:
        pool._after_fork()
        let_go_of_inherited()


def _in_child() -> None:
    global _reset_lock  # noqa: PLW0603 - replaced, never acquired, in the child

    _reset_lock = threading.Lock()
    for pool in list(_live):
        pool._after_fork()
    # Sessions still being opened by other threads at the fork, too.
    let_go_of_inherited()


if hasattr(os, "register_at_fork"):  # Windows has no fork
    os.register_at_fork(after_in_child=_in_child)
