"""Input rules in one place: lengths, characters, sizes. The same on SQLite and PostgreSQL.

PostgreSQL enforces ``VARCHAR(n)`` and refuses NUL in text; SQLite does neither. Checking
here, before anything is written, makes both backends refuse the same input with the same
one-line message naming the field, instead of PostgreSQL alone failing with "value too long".

The limits follow the columns in ``registry.store.sql.schema``; free-text columns (``Text``) get
a limit that keeps tables and the audit log readable.

Every check raises ``InvalidInput`` (or returns the value unchanged); the ``*_error`` variants
return the problem as a string for pydantic validators, which wrap it with the field's path.
Values are never echoed for fields that may hold a secret (environment values).
"""

from __future__ import annotations

import functools
import os
import re

from registry.errors import InvalidInput

# --- limits (characters, as VARCHAR counts them) ----------------------------------------

NAME_MAX = 63  # models.name, environments.name, releases.env/model/version
ACTOR_MAX = 255  # versions.actor, events.actor, releases.actor
FILE_NAME_MAX = 1024  # version_files.name
TENSOR_NAME_MAX = 1024  # tensors.name
# Both names are in a primary key: PostgreSQL refuses a btree entry over ~2700 bytes, which
# 1024 characters of CJK text (3 bytes each) exceed. 2048 bytes keeps every key well inside.
KEY_NAME_BYTES = 2048
DTYPE_MAX = 32  # tensors.dtype
SHAPE_MAX = 255  # tensors.shape, stored as JSON text: "[1000, 1000]"
DOCKER_HOST_MAX = 255  # environments.docker_host
REASON_MAX = 1000  # releases.reason, events.reason (Text): one line a table can show
MESSAGE_MAX = 10_000  # versions.message (Text): a changelog entry, like a commit message
ENV_VALUE_MAX = 32 << 10  # Docker passes env as one string; Linux caps one at 128 KiB
PROMPT_BYTES_DEFAULT = 1 << 20
PROMPT_BYTES_VAR = "REGISTRY_MAX_PROMPT_BYTES"

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# Characters that rewrite what a terminal or a table shows: C0, DEL, C1 (incl. NEL), the
# Unicode line and paragraph separators, bidi embeddings/overrides/isolates/marks (the
# "Trojan Source" set), and lone surrogates (not encodable as UTF-8: PostgreSQL would fail).
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}\ud800-\udfff]"
# The same without tab and newline, for free text that may span lines (messages).
_CONTROL_MULTILINE = f"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{_BIDI}\ud800-\udfff]"
# scheme://user:password@host: a password in a URL is a secret, whatever the variable's name
_URL_PASSWORD = r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:[^\s/@]+@"


@functools.cache
def _regex(pattern: str) -> re.Pattern:
    # compiled on first use, not at import: models imports this module on every command (~3 ms)
    return re.compile(pattern)


# --- checks that raise InvalidInput -----------------------------------------------------


def check_text(value: str, field: str, max_len: int, *, max_bytes: int | None = None,
               multiline: bool = False, secret: bool = False) -> str:
    """``value`` if it is at most ``max_len`` characters (and ``max_bytes`` as UTF-8) without
    control characters, else InvalidInput naming ``field``. ``multiline`` allows newlines and
    tabs; ``secret`` keeps the value out of the message."""
    problem = text_error(value, max_len, max_bytes=max_bytes, multiline=multiline, secret=secret)
    if problem:
        raise InvalidInput(f"{field}: {problem}")
    return value


def check_actor(value: str) -> str:
    """An actor name (``--actor``, ``$REGISTRY_ACTOR``, git's identity): one line, 255 characters."""
    return check_text(value, "actor", ACTOR_MAX)


def check_reason(value: str | None) -> str | None:
    """A ``--reason`` for promote, rollback or env remove: one line, 1000 characters; None passes."""
    return None if value is None else check_text(value, "reason", REASON_MAX)


def check_message(value: str | None) -> str | None:
    """A version's message (``push -m`` or the manifest's ``message``): may span lines."""
    return None if value is None else check_text(value, "message", MESSAGE_MAX, multiline=True)


def check_docker_host(value: str | None) -> str | None:
    """An environment's Docker host URL: one line, 255 characters; None passes."""
    return None if value is None else check_text(value, "docker_host", DOCKER_HOST_MAX)


def check_file_name(value: str, field: str) -> str:
    """A stored file name (a weight's relative path): 1024 characters, no control characters."""
    return check_text(value, field, FILE_NAME_MAX, max_bytes=KEY_NAME_BYTES)


def check_tensor(name: str, dtype: str, shape_text: str, field: str) -> None:
    """A tensor's recorded name, dtype and shape (as stored, JSON) fit their columns."""
    check_text(name, f"{field}: tensor name", TENSOR_NAME_MAX, max_bytes=KEY_NAME_BYTES)
    shown = safe_for_terminal(name[:80])
    check_text(dtype, f"{field}: tensor {shown!r} dtype", DTYPE_MAX)
    if len(shape_text) > SHAPE_MAX:
        raise InvalidInput(f"{field}: tensor {shown!r} has a shape of {len(shape_text)} characters "
                           f"as text, over the limit of {SHAPE_MAX}")


def max_prompt_bytes() -> int:
    """The prompt template size limit: ``$REGISTRY_MAX_PROMPT_BYTES``, default 1 MiB."""
    raw = os.environ.get(PROMPT_BYTES_VAR, "").strip()
    if not raw:
        return PROMPT_BYTES_DEFAULT
    if not raw.isdigit() or int(raw) <= 0:
        raise InvalidInput(f"{PROMPT_BYTES_VAR}={raw!r} is not a positive number of bytes (e.g. 1048576)")
    return int(raw)


def check_prompt_text(text: str, field: str, file_name: str) -> None:
    """A prompt template's text: tabs, newlines and CRLF line ends are fine; bidi overrides and
    other control characters (which would show one text and send another) are refused."""
    problem = text_error(text.replace("\r\n", "\n"), len(text), multiline=True)
    if problem:
        raise InvalidInput(f"{field}: {file_name}: {problem}")


def check_prompt_size(size: int, field: str, file_name: str) -> None:
    """Refuse a prompt template larger than ``max_prompt_bytes()``, naming the file."""
    limit = max_prompt_bytes()
    if size > limit:
        raise InvalidInput(f"{field}: {file_name} is {size} bytes, over the {limit}-byte limit for "
                           f"prompt templates (raise it with {PROMPT_BYTES_VAR} if it is meant to be)")


# --- the same rules as strings, for pydantic validators ---------------------------------


def text_error(value: object, max_len: int, *, max_bytes: int | None = None, multiline: bool = False,
               secret: bool = False) -> str | None:
    """What is wrong with ``value`` as text of at most ``max_len`` characters; None if nothing."""
    if not isinstance(value, str):
        return f"expected text, got {type(value).__name__}"
    if len(value) > max_len:
        return f"{len(value)} characters, over the limit of {max_len}"
    found = _regex(_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    if found:
        where = "" if secret else f" in {safe_for_terminal(_around(value, found.start()))!r}"
        allowed = " (newlines and tabs are fine)" if multiline else ""
        return f"control character {_char_name(found.group())} at position {found.start()}{where}; remove it{allowed}"
    if max_bytes is not None and len(value) * 4 > max_bytes and (n := len(value.encode())) > max_bytes:
        return f"{n} bytes as UTF-8, over the limit of {max_bytes}"
    return None


def env_value_error(key: str, value: object) -> str | None:
    """What is wrong with an environment variable's value; the value itself is never shown."""
    problem = text_error(value, ENV_VALUE_MAX, secret=True)
    if problem:
        return f"{key}: {problem}"
    if _regex(_URL_PASSWORD).search(value):
        return (f"{key} is a URL carrying a password, a secret in all but name: list {key} under "
                "runtime.secrets and pass its value from the environment at deploy time")
    return None


def method_error(value: object) -> str | None:
    """What is wrong with an HTTP method for a probe or warm-up request; None if nothing."""
    if isinstance(value, str) and value in HTTP_METHODS:
        return None
    shown = safe_for_terminal(value) if isinstance(value, str) else type(value).__name__
    hint = f" (write {value.upper()})" if isinstance(value, str) and value.upper() in HTTP_METHODS else ""
    return f"method {shown!r} is not an HTTP method: use one of {', '.join(HTTP_METHODS)}{hint}"


def json_error(value: object) -> str | None:
    """What keeps ``value`` (a probe or warm-up body) from being JSON; None if it is JSON.

    YAML has more types than JSON (dates, binary, sets, non-string keys); one of them in a
    body would only fail later, when the request is sent or the version's digest computed."""
    import math

    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            bad = next((k for k in item if not isinstance(k, str)), None)
            if bad is not None:
                return f"key {bad!r} is not a string: JSON object keys are strings; quote it"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{item!r} is not a JSON number"
        elif not (item is None or isinstance(item, (str, int, float, bool))):
            return f"{type(item).__name__} value {str(item)[:40]!r} is not JSON; quote it to send it as a string"
    return None


# --- rendering ----------------------------------------------------------------------------


def has_control(value: str) -> bool:
    """True if ``value`` holds a character ``safe_for_terminal`` would escape."""
    return bool(_regex(_CONTROL).search(value))


def safe_for_terminal(text: object) -> str:
    """``text`` with every control character made visible: newline as ⏎, the rest as ``\\x1b``
    or ``\\u202e``. For any user data a table or a line shows: a newline in an actor cannot add
    a fake row, an escape sequence cannot recolour or rewrite the screen.

    (Rich markup is another matter: pass the result through ``rich.markup.escape`` as well.)"""
    text = str(text)
    control = _regex(_CONTROL)
    if not control.search(text):
        return text  # the common case: one regex scan, no copy
    return control.sub(_visible, text)


def visible_text(text: object) -> str:
    """Like ``safe_for_terminal`` for text that may span lines: newlines and tabs kept, every
    other control character (bidi overrides, C0/C1, line separators) written as ``\\u202e``.
    What the web view shows of any user text (``registry ui``)."""
    text = str(text)
    control = _regex(_CONTROL_MULTILINE)
    if not control.search(text):
        return text
    return control.sub(_visible, text)


def _visible(found: re.Match) -> str:
    char = found.group()
    if char == "\n":
        return "\u23ce"  # ⏎
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _char_name(char: str) -> str:
    import unicodedata  # only on the error path

    code = ord(char)
    name = unicodedata.name(char, "") or {0x0A: "LINE FEED", 0x0D: "CARRIAGE RETURN", 0x00: "NUL",
                                          0x09: "TAB", 0x1B: "ESCAPE", 0x7F: "DELETE"}.get(code, "")
    return f"U+{code:04X}" + (f" ({name})" if name else "")


def _around(value: str, at: int, width: int = 20) -> str:
    start = max(0, at - width)
    return ("..." if start else "") + value[start:at + width] + ("..." if at + width < len(value) else "")
