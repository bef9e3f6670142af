"""Secrets never reach a stored row or an output: one scrubber for all text that leaves a run.

A ``Scrubber`` knows the secret values of a run (``runtime.secrets`` from the caller's
environment, variables named like secrets, a kept container's own env, passwords in URLs) and
replaces each with ``***`` in every form a server may echo it in:

- the raw value; JSON-escaped (``ensure_ascii`` on and off, ``\\/`` for ``/``, escaped twice
  for JSON inside JSON); URL-encoded (``quote`` with and without ``/`` kept, ``quote_plus``,
  upper and lower case hex); hex (both cases); base64 standard and urlsafe, padded or not, and
  the part of a base64 text that encodes the secret when it sits inside a longer encoded string
  (each of the 3 byte alignments: the characters that depend on the secret's bytes alone);
- any fragment a cut left at either end of the text: a prefix of a form at the end, a suffix at
  the start, or the whole text inside a form, once the fragment has ``MIN_FRAGMENT`` (3)
  characters (hex: 6, base64: 4, about as many bytes of the value). So a cut leaves at most 2
  characters of a secret in view; shorter matches would eat ordinary text ends ("HTTP 503" is
  a prefix of the hex of any secret starting with "P0") for no gain.

Scrub before cutting, never after (``scrub_and_cut``): a cut made first turns a known value
into an unknown fragment. Values shorter than ``MIN_SECRET`` (4) are not scrubbed: replacing
every ``ab`` in a log destroys it, and such a value protects nothing (warn at deploy time).

All forms of all values go into one trie-shaped regex, so scrubbing costs one pass over the
text however many secrets there are (bench/scrub.py: 64 KiB, 10 secrets).

URLs: ``mask_url`` hides the password, secret-looking query values and a token used as the
user name; ``secret_path=True`` keeps only ``scheme://host/***`` (a webhook URL is itself the
credential). ``mask_urls_in`` does it for every URL in free text. ``untrusted`` turns text from
a container (health body, warm-up answer, logs) into something safe to store and show.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from registry.models import is_secret_key

MASK = "***"
MIN_SECRET = 4  # shorter values are not scrubbed (see the module docstring)
MIN_FRAGMENT = 3  # a cut may leave at most MIN_FRAGMENT - 1 characters of a secret in view
HEX_FRAGMENT, BASE64_FRAGMENT = 6, 4  # the same, counted in encoded characters (~2.5 bytes)
ELLIPSIS = "…"

# Variables whose value is a URL that may carry a password (besides ones named like secrets).
URL_VARIABLES = ("DOCKER_HOST", "REGISTRY_DB_URL", "REGISTRY_WEBHOOK_URL", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class Scrubber:
    """Replaces every known secret value, in every form a server may echo it in, with ``***``."""

    def __init__(self, values: Iterable[str] = ()):
        self.values = frozenset(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET)
        minimum: dict[str, int] = {}  # form -> shortest fragment of it worth masking
        for value in self.values:
            for form, size in _forms(value).items():
                minimum[form] = min(size, minimum.get(form, size))
        self._minimum = minimum
        self._forms = sorted(minimum, key=len, reverse=True)
        self._compiled: re.Pattern | None = None
        self._longest = max(map(len, self._forms), default=0)

    def __bool__(self) -> bool:
        return bool(self.values)

    def extended(self, values: Iterable[str]) -> Scrubber:
        """A scrubber for these values as well (a run learns a kept container's env late)."""
        return Scrubber([*self.values, *values])

    def scrub(self, text: str) -> str:
        """``text`` with every form of every secret, and secret fragments at its ends, as ``***``."""
        if not self._forms or not text:
            return text
        text = self._pattern().sub(MASK, text)
        return self._scrub_ends(text)

    def _pattern(self) -> re.Pattern:
        # Compiled on first use (~8 ms for 10 secrets): most runs never have an error to scrub.
        if self._compiled is None:
            self._compiled = re.compile(_trie_pattern(self._forms))
        return self._compiled

    def scrub_and_cut(self, text: str, limit: int, *, keep: str = "head") -> str:
        """Scrub, then cut to at most ``limit`` characters (``keep="tail"`` keeps the end, for logs)."""
        return cut(self.scrub(text), limit, keep=keep)

    def scrub_json(self, value):
        """A JSON-like value (an event's detail) with every string in it scrubbed, keys too."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {self.scrub(str(k)): self.scrub_json(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub_json(v) for v in value]
        return value

    def untrusted(self, text: str | bytes, limit: int = 200, *, keep: str = "head", newlines: bool = False) -> str:
        """Text from a container made safe to store and show; see the module function ``untrusted``."""
        return untrusted(text, limit, scrubber=self, keep=keep, newlines=newlines)

    # --- fragments a cut left at the ends ----------------------------------------------

    def _scrub_ends(self, text: str) -> str:
        core = text.strip()
        if not core:
            return text
        lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
        if any(len(core) >= self._minimum[f] and core in f for f in self._forms):
            return lead + MASK + trail  # the whole text is a piece of a secret
        end = self._prefix_at_end(core[-self._longest:])
        if end:
            core = core[:-end] + MASK
        start = self._suffix_at_start(core[: self._longest])
        if start:
            core = MASK + core[start:]
        return lead + core + trail

    def _prefix_at_end(self, window: str) -> int:
        """Length of the longest proper prefix of a form that ``window`` ends with (0: none)."""
        best = 0
        for form in self._forms:
            piece = form[: self._minimum[form]]
            i = window.find(piece)
            while i != -1 and len(window) - i > best:
                if len(window) - i < len(form) and form.startswith(window[i:]):
                    best = len(window) - i
                    break
                i = window.find(piece, i + 1)
        return best

    def _suffix_at_start(self, window: str) -> int:
        """Length of the longest proper suffix of a form that ``window`` starts with (0: none)."""
        best = 0
        for form in self._forms:
            size = self._minimum[form]
            piece = form[-size:]
            i = window.rfind(piece)
            while i != -1 and i + size > best:
                if i + size < len(form) and form.endswith(window[: i + size]):
                    best = i + size
                    break
                i = window.rfind(piece, 0, i + size - 1)
        return best


def _forms(value: str) -> dict[str, int]:
    """Every spelling of ``value`` a server may echo, with the shortest fragment of it to mask."""
    raw = value.encode()
    forms = {f: BASE64_FRAGMENT for f in _base64_forms(raw)}
    forms.update({raw.hex(): HEX_FRAGMENT, raw.hex().upper(): HEX_FRAGMENT})
    forms.update({f: MIN_FRAGMENT for f in (value, *_json_forms(value), *_url_forms(value))})
    return {f: size for f, size in forms.items() if len(f) >= size}


def _json_forms(value: str) -> set[str]:
    once = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    once |= {f.replace("/", "\\/") for f in once}
    once |= {re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m[1].upper(), f) for f in once}
    twice = {json.dumps(f)[1:-1] for f in once}  # JSON inside a JSON string (a log line as JSON)
    return once | twice


def _url_forms(value: str) -> set[str]:
    encoded = {quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="/")}
    return encoded | {re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), f) for f in encoded}


def _base64_forms(raw: bytes) -> set[str]:
    """Base64 spellings of ``raw``: whole, and the part that depends on its bytes alone when it
    sits at byte offset 0, 1 or 2 of a 3-byte group inside a longer encoded string."""
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms |= {whole, whole.rstrip("=")}
        for offset in range(3):
            # characters i with 6i >= 8*offset and 6i + 6 <= 8*(offset + len): free of neighbours
            start, stop = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
            core = encode(b"\0" * offset + raw + b"\0\0").decode()[start:stop]
            if len(core) >= 2 * MIN_FRAGMENT:  # shorter cores would match ordinary base64 text
                forms.add(core)
    return forms


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex matching any of ``words``, longest first, shaped as a trie so a scan costs the
    same for 10 secrets as for 1 (an alternation of ~400 literals is tried one by one)."""
    root: dict = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _node_pattern(root)


def _node_pattern(node: dict) -> str:
    run = []  # a chain of single children becomes one literal run (no recursion, no regrouping)
    while len(node) == 1 and "" not in node:
        (ch, node), = node.items()
        run.append(ch)
    branches = [re.escape(ch) + _node_pattern(child) for ch, child in sorted(node.items()) if ch]
    if not branches:
        return re.escape("".join(run))
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if "" in node:  # a word ends here: the longer continuation is optional (and tried first)
        body = (body if len(branches) > 1 else "(?:" + body + ")") + "?"
    return re.escape("".join(run)) + body


# --- where secret values come from ------------------------------------------------------


def secret_values(environ: Mapping[str, str], *, declared: Iterable[str] = (),
                  container_env: Mapping[str, str] | None = None) -> set[str]:
    """The values a run must scrub: ``runtime.secrets`` (``declared``) from the caller's
    environment and from a kept container's own env, every variable named like a secret in
    either, and the credentials inside URL-valued variables (``DOCKER_HOST``, database URLs)."""
    declared = set(declared)
    values: set[str] = set()
    for source in (environ, container_env or {}):
        for key, value in source.items():
            if not value:
                continue
            if key in declared or is_secret_key(key):
                values.add(value)
                values |= url_secrets(value)
            elif key in URL_VARIABLES or "://" in value:
                values |= url_secrets(value)
    return {v for v in values if len(v) >= MIN_SECRET}


def from_environ(environ: Mapping[str, str], *, declared: Iterable[str] = (),
                 container_env: Mapping[str, str] | None = None, urls: Iterable[str] = ()) -> Scrubber:
    """A scrubber for a run: see ``secret_values``; ``urls`` adds the credentials of other URLs
    (an environment's docker_host, the database URL, a webhook: pass ``webhooks`` to mask_url)."""
    values = secret_values(environ, declared=declared, container_env=container_env)
    for url in urls:
        values |= url_secrets(url)
    return Scrubber(values)


# --- URLs -------------------------------------------------------------------------------

# Query parameters whose value is a credential (besides names like *_TOKEN, *_KEY ...).
_SECRET_PARAMS = {"password", "passwd", "pwd", "pass", "token", "access_token", "refresh_token", "id_token",
                  "secret", "client_secret", "key", "api_key", "apikey", "auth", "sig", "signature",
                  "sslpassword", "x-amz-signature", "x-amz-credential", "x-goog-signature"}
# Schemes where a user name is a login, not a token (https://TOKEN@github.com is a token).
_LOGIN_SCHEMES = re.compile(r"(ssh|sftp|tcp|unix|npipe|postgres(ql)?|mysql|mariadb|mssql|oracle|redis|rediss|amqps?|"
                            r"mongodb(\+srv)?|sqlite|ftp|smtp|ldaps?)(\+\w+)?", re.I)
# Webhook services whose URL path is the credential: masked to scheme://host/*** by default.
_WEBHOOK_HOSTS = re.compile(r"hooks\.slack\.com|(?:\w+\.)?discord(?:app)?\.com|(?:[\w-]+\.)*webhook\.office\.com|"
                            r"outlook\.office\.com|hooks\.zapier\.com|[\w.-]*\.?hooks?\.[\w.-]+", re.I)
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,30}://[^\s'\"<>`]+")


def _is_secret_param(name: str) -> bool:
    return name.lower() in _SECRET_PARAMS or is_secret_key(name)


def _login_user(scheme: str, user: str) -> bool:
    return bool(_LOGIN_SCHEMES.fullmatch(scheme)) and bool(re.fullmatch(r"[\w.-]{1,32}", unquote(user)))


def is_webhook(url: str) -> bool:
    """True for URLs of known webhook services (``hooks.slack.com``, ``*.webhook.office.com`` ...,
    any ``hooks.*`` host, ``/webhooks/`` paths), whose path is the credential."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(_WEBHOOK_HOSTS.fullmatch(parts.hostname or "")) or "/webhook" in parts.path.lower()


def mask_url(url: str, *, secret_path: bool | None = None) -> str:
    """``url`` with its credentials as ``***``: the password, a token used as user name
    (``https://TOKEN@host``), secret-looking query values. ``secret_path=True`` (a webhook: the
    path is the credential) keeps only ``scheme://host[:port]/***``; by default (None) so do
    URLs that ``is_webhook`` recognises. Text that is no URL is
    returned as is; use ``mask_urls_in`` for free text."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced [ in the host: mask what looks like user:password@
        return re.sub(r"(//[^/@\s:]*):[^@\s]*@", r"\1:***@", url)
    scheme, _, after = url.partition("://")
    if not parts.scheme or not parts.netloc or not after.startswith(parts.netloc):
        return url if "@" not in url else re.sub(r"(//[^/@\s:]*):[^@\s]*@", r"\1:***@", url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if secret_path or (secret_path is None and is_webhook(url)):
        return f"{scheme}://{hostport}/{MASK}"
    if at:
        user, colon, _password = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:{MASK}" if _login_user(parts.scheme, user) or not user else f"{MASK}:{MASK}"
        elif not _login_user(parts.scheme, user):
            userinfo = MASK
    rest = after[len(parts.netloc):]  # path, query and fragment, verbatim
    return f"{scheme}://{userinfo}{at}{hostport}" + _mask_query(rest)


def _mask_query(rest: str) -> str:
    """Mask the values of secret-looking parameters in ``?query`` and ``#fragment`` text."""
    def value(m: re.Match) -> str:
        return m[1] + m[2] + "=" + (MASK if _is_secret_param(unquote(m[2])) else m[3])
    return re.sub(r"([?&#;])([^=&#;?]+)=([^&#;]*)", value, rest)


def url_secrets(url: str) -> set[str]:
    """The credentials inside ``url`` (password raw and decoded, a token user name, secret
    query values), for a Scrubber: so a server echoing one outside the URL is caught too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    if not parts.scheme or not parts.netloc:
        return set()
    found = set()
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon:
            found |= {password, unquote(password)}
        if not _login_user(parts.scheme, user):
            found |= {user, unquote(user)}
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if _is_secret_param(name):
            found |= {value, quote(value, safe="")}
    return {v for v in found if len(v) >= MIN_SECRET}


def mask_urls_in(text: str, *, webhooks: Iterable[str] = ()) -> str:
    """Every URL in free text passed through ``mask_url``; URLs starting with one of ``webhooks``
    (the configured webhook URLs, or their ``scheme://host/`` prefixes) keep only their host,
    as do URLs of known webhook services."""
    prefixes = tuple(w for w in webhooks if w)

    def one(m: re.Match) -> str:
        url = m[0]
        return mask_url(url, secret_path=True if prefixes and url.startswith(prefixes) else None)
    return _URL_IN_TEXT.sub(one, text)


# --- text from a container ----------------------------------------------------------------


def cut(text: str, limit: int, *, keep: str = "head") -> str:
    """At most ``limit`` characters of ``text``, marked with ``…`` where something was cut."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    if keep == "tail":
        return ELLIPSIS + text[len(text) - limit + 1:]
    return text[: limit - 1] + ELLIPSIS


def _escape(ch: str, newlines: bool) -> str:
    if ch == "\n" and newlines:
        return ch
    if ch in "\t\n\r":
        return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch]
    # control, format (bidi overrides, zero-width), surrogate, private use, line/paragraph separators
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return ch


def escape_controls(text: str, *, newlines: bool = False) -> str:
    """Control and invisible characters as ``\\xNN`` / ``\\uNNNN`` escapes: a terminal escape or a
    bidi override in a container's answer must not repaint the operator's screen."""
    return "".join(_escape(ch, newlines) for ch in text)


def untrusted(text: str | bytes, limit: int = 200, *, scrubber: Scrubber | None = None, keep: str = "head",
              newlines: bool = False, webhooks: Iterable[str] = ()) -> str:
    """Text from a container (health body, warm-up answer, log tail) safe to store and show:
    URL credentials masked and secrets scrubbed over the whole text, then control characters
    escaped and the result cut to at most ``limit`` characters (never inside an escape).
    ``keep="tail"`` keeps the end (log tails); ``newlines=True`` keeps line breaks."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = mask_urls_in(text.strip(), webhooks=webhooks)
    if scrubber is not None:
        text = scrubber.scrub(text)
    return _escape_and_cut(text, limit, keep=keep, newlines=newlines)


def _escape_and_cut(text: str, limit: int, *, keep: str, newlines: bool) -> str:
    """Escape character by character until ``limit`` is reached, so long texts cost O(limit)."""
    chars = reversed(text) if keep == "tail" else iter(text)
    out: list[str] = []
    used = 0
    for ch in chars:
        piece = _escape(ch, newlines)
        if used + len(piece) > limit:
            while out and used + len(ELLIPSIS) > limit:
                used -= len(out.pop())
            out.append(ELLIPSIS)
            break
        out.append(piece)
        used += len(piece)
    return "".join(reversed(out) if keep == "tail" else out)


def scrub_for_display(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Any message bound for a terminal or a log, as the last guard: URL credentials masked and
    the values of the process's secret-like variables (``*_TOKEN`` ...) and the passwords of the
    URLs Cellar itself connects to (``DOCKER_HOST``, ``REGISTRY_DB_URL`` ...) scrubbed. Other
    variables holding URLs are left alone: a weak test password like ``cellar`` would otherwise
    blank out every "cellar" in every message."""
    import os

    environ = os.environ if environ is None else environ
    own = {k: v for k, v in environ.items() if is_secret_key(k) or k in URL_VARIABLES}
    return mask_urls_in(Scrubber(secret_values(own)).scrub(text))
