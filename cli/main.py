"""Entry point of the ``registry`` console script."""

import gc

from cli import completion as _completion  # noqa: F401  (registry completion SHELL)
from cli import deploy as _deploy  # noqa: F401  (registers its commands)
from cli import health as _health  # noqa: F401  (probe, health, watch, metrics)
from cli import inspection as _inspection  # noqa: F401  (diff, blame, audit)
from cli import maintenance as _maintenance  # noqa: F401  (verify, gc, backup, export, ...)
from cli import ui as _ui  # noqa: F401  (registry ui: the web view)
from cli import versions as _versions  # noqa: F401  (registers its commands)
from cli.app import app


def main() -> None:
    # One command is one short process whose start-up is mostly imports: cyclic garbage
    # collection during them costs ~30 ms and finds nothing worth freeing, and freezing the
    # heap spares the interpreter a traversal at exit (measured in bench/rollback.py).
    # In-process callers (tests, the Python API) keep the collector.
    gc.disable()
    try:
        app()
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
