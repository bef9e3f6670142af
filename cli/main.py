"""Entry point of the ``registry`` console script."""

import gc
import sys

from cli import completion as _completion  # noqa: F401  (registry completion SHELL)
from cli import deploy as _deploy  # noqa: F401  (registers its commands)
from cli import health as _health  # noqa: F401  (probe, health, watch, metrics)
from cli import hooks as _hooks  # noqa: F401  (registry hook ...)
from cli import inspection as _inspection  # noqa: F401  (diff, blame, audit)
from cli import maintenance as _maintenance  # noqa: F401  (verify, gc, backup, export, ...)
from cli import remotes as _remotes  # noqa: F401  (remote add/list/remove/verify, pull)
from cli import signing as _signing  # noqa: F401  (key, sign, approve, signature, checkout)
from cli import ui as _ui  # noqa: F401  (registry ui: the web view)
from cli import versions as _versions  # noqa: F401  (registers its commands)
from cli.app import READER_LEFT_EXIT, app, silence_stdout

LONG_RUNNING = {"watch", "ui"}  # and `metrics --listen`: they serve for days


def runs_for_days(argv: list[str]) -> bool:
    """True for a command that serves until stopped: it keeps the cyclic collector, which a
    short command turns off (its web and HTTP servers make cycles; the ui grew 64 -> 358 MB over
    a few thousand requests without it)."""
    words = [a for a in argv if not a.startswith("-")]
    command = words[0] if words else ""
    return (command in LONG_RUNNING or (command == "metrics" and any(a.startswith("--listen") for a in argv))
            or (command == "hook" and words[1:2] == ["run"]))


def main() -> None:
    # One command is one short process whose start-up is mostly imports: cyclic garbage
    # collection during them costs ~30 ms and finds nothing worth freeing, and freezing the
    # heap spares the interpreter a traversal at exit (measured in bench/rollback.py).
    # In-process callers (tests, the Python API) and long-running commands keep the collector.
    if runs_for_days(sys.argv[1:]):
        return _closed_pipe_is_an_end(app)
    gc.disable()
    try:
        _closed_pipe_is_an_end(app)
    finally:
        gc.freeze()


def _closed_pipe_is_an_end(run) -> None:
    """Run the app; output still buffered when it ends is flushed here, where a reader that has
    gone (``| head -c 1``) ends the command as a closed pipe does (``reader_left``), rather than
    in the interpreter's exit, which would report it and exit 120. While a command runs, the
    app's funnel does the same."""
    try:
        run()
    except SystemExit:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            silence_stdout()
            raise SystemExit(READER_LEFT_EXIT) from None
        raise


if __name__ == "__main__":
    main()
