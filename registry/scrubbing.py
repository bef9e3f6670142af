"""Secret values out of any text bound for a user, a log, a database row or the audit log."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from registry.models import is_secret_key

MIN_SECRET_LEN = 4  # shorter values are too likely to be ordinary words or numbers


def scrub(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ***."""
    for value in sorted(set(secret_values), key=len, reverse=True):  # longest first: no partial leftovers
        if value and value in text:
            text = text.replace(value, "***")
    return text


def secret_like_values(env_vars: Mapping[str, str]) -> set[str]:
    """Values of the variables named like secrets (``*_TOKEN``, ``*_KEY`` ...)."""
    return {v for k, v in env_vars.items() if is_secret_key(k) and len(v) >= MIN_SECRET_LEN}
