"""Render a probe body's strings with the version's prompt templates, in Jinja2's sandbox.

A probe body may say ``{"prompt": "{{ prompts.system }}\\nUser: print the canary"}``. Every
string in the body that contains ``{{`` or ``{%`` is rendered; other strings, numbers and keys
are left as they are.

What a template sees (nothing else: no runtime env, no secrets, no files):

- ``prompts``: the version's prompt texts by name (``prompts.system``), unrendered;
- ``{% include "system" %}``: the prompt ``system`` rendered as a template with the same variables;
- ``model``, ``version``, ``env``: the names of what is being probed (``env`` may be empty).

Limits, because a manifest is input from whoever can push: the sandbox refuses attribute
access to ``_``-names (``''.__class__.__mro__`` ...) and unsafe callables; the output of one
string is capped at ``MAX_OUTPUT_CHARS``, string/list repetition and ``**`` are checked before
they run, width-taking and multiplying filters and methods (``center``, ``format``, ``join``,
``replace`` ...) are refused,
``range`` is capped, and rendering stops after ``TIME_LIMIT_S``: on the main thread by a
SIGALRM timer (hard), elsewhere by checks at every call, attribute and ``range`` step.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from registry.errors import TemplateRefused

MAX_OUTPUT_CHARS = 64 * 1024
MAX_RANGE = 10_000
TIME_LIMIT_S = 1.0

# Filters whose output is at most about their input's size: width-taking ones (center, indent,
# format) and multiplying ones (join, replace: a long separator times a long list) are left out.
SAFE_FILTERS = {"abs", "capitalize", "default", "d", "e", "escape", "first", "float", "int",
                "last", "length", "count", "list", "lower", "upper", "title", "trim", "string",
                "tojson", "truncate", "reverse", "sort", "unique", "striptags", "wordcount"}
_REFUSED_METHODS = {"format", "format_map", "center", "ljust", "rjust", "zfill", "expandtabs", "join", "replace"}


class _Timeout(Exception):
    pass


def render_body(body: Any, *, prompts: Mapping[str, str], model: str = "", version: str = "",
                env: str = "", probe: str = "probe") -> Any:
    """``body`` with every templated string rendered; TemplateRefused (one line) otherwise."""
    if not _has_template(body):
        return body  # most bodies: no Jinja import at all
    sandbox = _environment(prompts)
    variables = {"prompts": dict(prompts), "model": model, "version": version, "env": env}
    return _walk(body, lambda text: render_text(text, sandbox, variables, probe=probe))


def renderer(*, prompts: Mapping[str, str], model: str = "", version: str = "", env: str = ""):
    """A ``render(probe_name, body)`` callable for ``registry.probes.probing.run_suite``."""
    def render(probe: str, body: Any) -> Any:
        return render_body(body, prompts=prompts, model=model, version=version, env=env, probe=probe)
    return render


def render_text(text: str, sandbox, variables: Mapping[str, Any], *, probe: str = "probe") -> str:
    """Render one template string within the size and time limits."""
    from jinja2 import TemplateError
    from jinja2.sandbox import SecurityError

    try:
        with _deadline(sandbox, TIME_LIMIT_S):
            return _capped(sandbox.from_string(text).generate(**variables))
    except SecurityError as exc:
        raise TemplateRefused(f"probe {probe!r}: body template refused by the sandbox ({_first_line(exc)}); "
                              "use only prompts.NAME, model, version, env and plain filters") from None
    except _Timeout:
        raise TemplateRefused(f"probe {probe!r}: body template ran longer than {TIME_LIMIT_S:g} s; "
                              "simplify it") from None
    except TemplateError as exc:
        raise TemplateRefused(f"probe {probe!r}: body template does not render ({_first_line(exc)})") from None


def has_template(value: Any) -> bool:
    """True when a string anywhere in ``value`` (a probe body) holds ``{{`` or ``{%``."""
    return _has_template(value)


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def _walk(value: Any, render) -> Any:
    if isinstance(value, str):
        return render(value) if _has_template(value) else value
    if isinstance(value, dict):
        return {k: _walk(v, render) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, render) for v in value]
    return value


def _capped(chunks: Iterator[str]) -> str:
    from jinja2.sandbox import SecurityError

    out, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise SecurityError(f"output longer than {MAX_OUTPUT_CHARS} characters")
        out.append(chunk)
    return "".join(out)


def _environment(prompts: Mapping[str, str]):
    from jinja2 import DictLoader, StrictUndefined

    sandbox = _sandbox_class()(loader=DictLoader(dict(prompts)), undefined=StrictUndefined,
                               autoescape=False, keep_trailing_newline=True)
    sandbox.filters = {k: v for k, v in sandbox.filters.items() if k in SAFE_FILTERS}
    sandbox.globals = {"range": sandbox.capped_range}
    return sandbox


_SANDBOX_CLASS = None


def _sandbox_class():
    """The limited sandbox, defined on first use: jinja2 is imported only for templated bodies."""
    global _SANDBOX_CLASS
    if _SANDBOX_CLASS is None:
        _SANDBOX_CLASS = _define_sandbox()
    return _SANDBOX_CLASS


def _define_sandbox():
    from jinja2.sandbox import SandboxedEnvironment, SecurityError

    class LimitedSandbox(SandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%"})
        deadline: float = float("inf")

        def check_time(self) -> None:
            if time.monotonic() > self.deadline:
                raise _Timeout()

        def call_binop(self, context, operator, left, right):
            self.check_time()
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

        def is_safe_callable(self, obj) -> bool:
            if getattr(obj, "__name__", None) in _REFUSED_METHODS:
                return False
            return super().is_safe_callable(obj)

        def getattr(self, obj, attribute):
            self.check_time()
            return super().getattr(obj, attribute)

        def call(self, __context, __obj, *args, **kwargs):
            self.check_time()
            return super().call(__context, __obj, *args, **kwargs)

        def capped_range(self, *args):
            numbers = range(*args)
            if len(numbers) > MAX_RANGE:
                raise SecurityError(f"range longer than {MAX_RANGE}")
            for n in numbers:
                self.check_time()
                yield n

    return LimitedSandbox


def _check_binop(operator: str, left, right) -> None:
    from jinja2.sandbox import SecurityError

    if operator == "*":
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_OUTPUT_CHARS:
            raise SecurityError("repetition longer than the output limit")
    elif operator == "**":
        if isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError("exponent larger than 64")
    elif operator == "%" and isinstance(left, str):
        raise SecurityError("'%' string formatting is not allowed")


@contextmanager
def _deadline(sandbox, seconds: float) -> Iterator[None]:
    sandbox.deadline = time.monotonic() + seconds
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread: the cooperative checks must do
        return

    def expire(_signum, _frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
