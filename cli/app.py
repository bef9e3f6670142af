"""The typer app, its one error funnel, the global options and ``open_registry``.

Command modules register on ``app``; each command parses options, calls one Registry
method and renders the result. The CLI imports only ``registry`` (whose exports load lazily)
and its own modules, so ``registry --help`` pays for neither SQLAlchemy nor docker-py.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer
from typer.core import TyperGroup, TyperOption

from registry import INTERNAL_ERROR_EXIT, CellarError

PROG = "registry"
COMPLETE_VAR = "_REGISTRY_COMPLETE"  # set by the scripts `registry completion SHELL` prints
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off"}

class CellarGroup(TyperGroup):
    """Turns every CellarError into one red line and its exit code (``--traceback`` for more)."""

    def parse_args(self, ctx, args):
        # Errors say "rerun with --traceback" and people append it: accept it anywhere before "--"
        # by moving it to where the root group's option belongs.
        end = args.index("--") if "--" in args else len(args)
        if "--traceback" in args[:end]:
            args = ["--traceback", *(a for i, a in enumerate(args) if i >= end or a != "--traceback")]
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            _refuse_flag_values(command.context_class(command, info_name=name, parent=ctx), rest)
        return name, command, rest

    def _main_shell_completion(self, ctx_args, prog_name, complete_var=None):
        # typer registers its bash/zsh/fish completers only with add_completion=True, which
        # adds two options built at every start-up; register them only when a shell asks.
        if os.environ.get(complete_var or COMPLETE_VAR):
            from typer.completion import completion_init

            completion_init()
        super()._main_shell_completion(ctx_args, prog_name, complete_var)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            reader_left()
        except CellarError as exc:
            _fail(ctx, str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", 130)
        except Exception as exc:
            if _is_click_error(exc):
                raise
            _fail(ctx, f"internal error: {type(exc).__name__}: {exc} (a bug in Cellar, not your input: rerun "
                       "with --traceback and send its output to your Cellar maintainers)", INTERNAL_ERROR_EXIT)


READER_LEFT_EXIT = 141  # 128 + SIGPIPE: what `git log | head` ends with


def reader_left() -> NoReturn:
    """Whoever read stdout went away (``registry history --json | head -1``): a normal end, not an
    error. Nothing more is written, not even at exit, and the exit status is that of a process a
    closed pipe stopped."""
    silence_stdout()
    raise typer.Exit(READER_LEFT_EXIT)


def silence_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered goes nowhere, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no descriptor behind it (an in-process caller)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (lives as long as the process)


def _refuse_flag_values(ctx, args: list[str]) -> None:
    """``--json true``: a flag takes no value, so "true" would silently become the next argument
    (``list --json true`` looked for a model named "true"); say so as a usage error instead."""
    end = args.index("--") if "--" in args else len(args)
    flags = {name: p for p in ctx.command.params if getattr(p, "is_flag", False) for name in p.opts}
    for arg, following in zip(args[:end], args[1:end]):
        if arg in flags and following.lower() in _BOOL_WORDS:
            raise typer.BadParameter(f"a flag takes no value: drop {following!r} (an argument named "
                                     f"{following!r} goes before {arg})", ctx=ctx, param=flags[arg])


def _flag_type(self, ctx) -> str | None:
    """typer 0.29's rich help labels every flag ``<bool>`` as if it took a value (its plain help
    does not): show a flag bare, like ``--json``. tests/cli/test_flags.py notices when typer's
    own fix makes this redundant."""
    return None if self.is_flag or self.count else _typer_display_type_rich(self, ctx)


_typer_display_type_rich = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]  # the patch _flag_type's docstring explains


def _is_click_error(exc: Exception) -> bool:
    return type(exc).__module__.startswith("typer._click")


def _fail(ctx, message: str, code: int):
    if ctx.find_root().params.get("traceback"):
        import traceback

        traceback.print_exc()
    from registry import safe_for_terminal, scrub_for_display

    # always one line, and never a secret: the last guard for every error the CLI prints
    print(f"error: {safe_for_terminal(scrub_for_display(' '.join(message.splitlines())))}", file=sys.stderr)
    raise typer.Exit(code)


app = typer.Typer(
    cls=CellarGroup,
    name=PROG,
    help="Cellar: versioned model weights, prompts and images; promote, roll back, audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(cls=CellarGroup, help="Database schema maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.callback()
def _root(
    traceback: bool = typer.Option(False, "--traceback", help="Show the full trace of an error."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=lambda on: _print_version(on),
                                 help="Print Cellar's version and exit."),
) -> None:
    """Cellar: versioned model weights, prompts and images; promote, roll back, audit.

    Example:  registry init && registry push examples/support-bot/v1.0/cellar.yaml
    """


def _print_version(on: bool) -> None:
    if on:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"registry (Cellar) {version('cellar-registry')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("registry (Cellar) from source, not installed")
        raise typer.Exit(0)


def seconds(value: float | None) -> float | None:
    """An option's callback: a duration must be more than 0 (``watch --every 0`` would spin)."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g} is not a duration: give a number of seconds above 0")
    return value


def open_registry():
    """The registry of this directory ($REGISTRY_HOME, else the nearest .cellar/)."""
    from registry import Registry

    return Registry.open()


JSON = typer.Option(False, "--json", help="Print the result as JSON.")
DEFAULT_LIMIT = 100  # rows a listing shows unless --limit or --all: bounded reads at any size
ACTOR = typer.Option(None, "--actor", help="Who is acting (default: $REGISTRY_ACTOR, git user, OS user).")
