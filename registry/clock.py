"""The one clock Cellar reads; tests replace ``now`` (the only thing they mock)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """Databases hand back naive UTC (SQLite) or aware values (PostgreSQL); make both aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
