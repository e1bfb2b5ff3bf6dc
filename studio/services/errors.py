"""Errors raised by services. Every message says what to change; the UI and CLI show it as is."""

from __future__ import annotations


class ServiceError(ValueError):
    """Base of every refusal by a service."""


class ValidationError(ServiceError):
    """The input breaks a rule (empty caption, frames out of range, unknown character, bad image...)."""


class NotFoundError(ServiceError):
    """The thing asked for does not exist (or no longer exists)."""


class ConflictError(ServiceError):
    """The request clashes with the current state (stale reorder, duplicate name, job already finished...)."""


def get_or_not_found(session, model, ident: int, what: str):
    """`session.get(model, ident)`, or NotFoundError("<what> <ident> does not exist") when there is no such row."""
    row = session.get(model, ident)
    if row is None:
        raise NotFoundError(f"{what} {ident} does not exist")
    return row
