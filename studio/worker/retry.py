"""Retrying the worker's own database writes through short, transient failures.

A generation that ran for minutes must not be lost to a hiccup that clears in milliseconds: a PostgreSQL restart
or failover drops connections (`connection_invalidated`), a serialization conflict asks for a retry, and SQLite
can still answer "database is locked" once its busy timeout runs out under heavy write load. (The studio's units
of work that may write begin IMMEDIATE on SQLite, so the instant SQLITE_BUSY_SNAPSHOT of a read-then-write
transaction no longer happens.) Each service call is one unit of work that rolls back completely on error, asset
files included, so calling it again is safe.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

logger = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_TEXT = ("database is locked", "database table is locked", "busy", "could not serialize", "deadlock")


def is_transient(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OperationalError) and any(text in str(error).lower() for text in TRANSIENT_TEXT)


def retry_db(call: Callable[..., T], *args, attempts: int = 8, first_delay_s: float = 0.02, **kwargs) -> T:
    """`call(*args, **kwargs)`, again after a short, growing, jittered pause while the error is transient."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if attempt == attempts or not is_transient(error):
                raise
            logger.info("database busy (%s); retry %d of %d", str(error).splitlines()[0][:120], attempt, attempts)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")
