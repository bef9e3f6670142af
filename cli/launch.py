"""Entry point of the ``registry`` console script: hand the command to the warm process.

Most of a short command's time is importing (SQLAlchemy, pydantic, docker-py, typer, rich):
0.4-1 s on a small server, against milliseconds of work. So the first command also starts a
*warm process* (``cli/warm.py``) that imports all of it once and then forks one child per
command; later commands connect to it over a Unix socket, pass their stdin/stdout/stderr, argv,
environment, working directory and umask, forward the signals they receive, and exit with the
child's status. The command runs exactly as it would here, only without the imports: the
model is Bazel's and Gradle's client/server, with a fork per command as in Android's zygote.

This module imports nothing beyond the standard library's small pieces. It runs the command in
this process instead when ``REGISTRY_WARM=0``, for the long-running commands (``watch``,
``metrics``, ``ui``: their own cgroup and signals matter more than start-up), and whenever the
warm process is not there yet or cannot be used: when it does not take the command within
``HANDOFF_S`` (stopped, hung, overloaded), or where the kernel lacks pidfds (it then leaves a
``.off`` marker and no command tries it again). A signal before the command started ends the
client as it would have ended the command; once started, the command is its own process: the
client signals it directly (a pidfd), and it survives the warm process's death.

The warm process starts with a minimal environment (no ``*_TOKEN``, no ``PGPASSWORD``): each
command's child gets its caller's environment, and only it.
"""

from __future__ import annotations

import _socket  # socket.py's C core: `import socket` would cost 7 ms of a 100 ms command
import os
import struct
import sys

LONG_RUNNING = frozenset({"watch", "metrics", "ui", "hook"})  # hook: `hook run` serves for days
HANDOFF_S = 2.0  # a warm process that has not taken the command by then is stuck: run it here
MAX_SOCKET_PATH = 96  # sun_path holds 107 bytes; the warm process binds PATH.<pid> first
IDLE_S = 600  # the warm process exits after this long without a command
# Variables read when the interpreter starts (locale) or a module is imported (Python's own,
# typer's, rich's): a child of the warm process has them as the warm process saw them, so they
# are part of its identity.
IMPORT_TIME_ENV = ("PYTHON", "LANG", "LC_", "TYPER_", "_TYPER_", "PYDANTIC_", "TERMINAL_WIDTH", "FORCE_COLOR",
                   "PY_COLORS", "GITHUB_ACTIONS", "SQLALCHEMY_", "LD_")
# The warm process's whole environment: the variables above (the dynamic loader's included),
# and these few; never a secret. Each command gets its caller's environment in its own child.
WARM_ENV = ("PATH", "HOME", "TZ", "TMPDIR")
SECRET_SUFFIXES = ("_TOKEN", "_KEY", "_PASSWORD", "_SECRET", "PGPASSWORD")
# What a forked child inherits from the warm process rather than from this one: who it is,
# what it may do and see. A difference in any of them means another warm process.
INHERITED = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
             "Seccomp", "Cpus_allowed_list", "Mems_allowed_list")
FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def main() -> None:
    argv = [os.path.basename(sys.argv[0]).removesuffix(".py") or "registry", *sys.argv[1:]]
    if os.environ.get("REGISTRY_WARM", "1") != "0" and not LONG_RUNNING.intersection(argv[1:]):
        try:
            path = socket_path()
        except Exception:  # an unusual /proc or /tmp: run here, as without a warm process
            path = None
        if path is not None and os.path.exists(path.removesuffix(".sock") + ".off"):
            path = None  # a warm process found this kernel without pidfds: stay out of the way
        if path is not None:
            try:
                code = run_warm(path, argv)
            except NoWarmProcess:  # none yet, or an old socket left by one that was killed
                code = None
                try:
                    start_warm(path)
                except OSError:  # cannot fork now, or SIGCHLD ignored: the next command tries again
                    pass
            if code is not None:
                os._exit(code)
    from cli.main import main as run_here

    run_here()


class NoWarmProcess(Exception):
    """Nothing listens at the socket (nothing has run)."""


class _Abort(Exception):
    """A signal arrived before the command started: end as it would have ended the command."""


def run_warm(path: str, argv: list[str]) -> int | None:
    """Run the command in a child of the warm process at ``path``; its exit code, or None when
    the command should run in this process (nothing has run then)."""
    import marshal
    import signal

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    # Bounded too: a stopped warm process whose queue of connections is full blocks a connect.
    sock.settimeout(HANDOFF_S)
    try:
        sock.connect(path)
    except (TimeoutError, BlockingIOError):  # there, but stuck (its queue full): run here, start none
        sock.close()
        return None
    except OSError:
        sock.close()
        raise NoWarmProcess(path) from None
    try:
        _, uid, _ = struct.unpack("3i", sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))
    except OSError:
        uid = -1
    if uid != os.getuid():  # a socket put there by someone else: never hand them anything
        sock.close()
        return None

    command: list[int] = []  # the command's pidfd, once it started

    def forward(signum, _frame):
        if not command:
            raise _Abort(signum)
        try:
            signal.pidfd_send_signal(command[0], signum)
        except OSError:  # it has ended
            pass

    def stop(_signum, _frame):  # Ctrl-Z: stop the command, then ourselves; resume both
        if command:
            forward(signal.SIGSTOP, None)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        signal.signal(signal.SIGTSTP, stop)
        if command:
            forward(signal.SIGCONT, None)

    forwarded = [int(getattr(signal, name)) for name in FORWARDED_SIGNALS]
    ignored = [sig for sig in forwarded if signal.getsignal(sig) is signal.SIG_IGN]  # nohup, `cmd &`
    previous = {sig: signal.signal(sig, forward) for sig in forwarded if sig not in ignored}
    if signal.getsignal(signal.SIGTSTP) is not signal.SIG_IGN:
        previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, stop)

    def restore() -> None:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    try:
        pid = _hand_over(sock, argv, ignored, marshal)
    except _Abort as abort:  # Ctrl-C while it was handed over: end as the command would have
        restore()  # (the warm process sees us gone and ends a command that just started)
        signum = abort.args[0]
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum
    if pid is None:  # not taken in time, or refused: nothing has run, run it here
        restore()
        return None
    try:
        command.append(os.pidfd_open(pid))
    except OSError:  # it has ended already: its status is on the way
        pass
    status = _read(sock, 4)
    if len(status) < 4:
        try:
            sys.stderr.write("registry: the command ended without an exit status (killed?); "
                             "see `registry status`, and set REGISTRY_WARM=0 to run commands in-process\n")
        except OSError:
            pass
        return 1
    (code,) = struct.unpack("!i", status)
    if code < 0:  # the child died of a signal: so do we, and the shell sees the same status
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code  # a signal whose default is to carry on
    return code


def _hand_over(sock: _socket.socket, argv: list[str], ignored: list[int], marshal) -> int | None:
    """Send the request; the pid of the child that took it, or None when no child said it was
    ready within HANDOFF_S, or it refused. A signal meanwhile raises _Abort (from the handler)."""
    import signal

    sock.settimeout(HANDOFF_S)
    # Nothing is sent before a live child says it is ready: descriptors queued on a stopped warm
    # process would keep this process's pipes open after it ran the command itself.
    if _read(sock, 1) != b"\x02":
        return None
    streams = (sys.stdin, sys.stdout, sys.stderr)
    request = marshal.dumps({
        "argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "umask": _umask(), "ignored": ignored,
        "stdio": [(s.encoding, s.errors, getattr(s, "write_through", False)) if s is not None else None
                  for s in streams],
    })
    # A signal's handler must not run inside a half-sent request: while it is sent, signals wait.
    waiting = signal.pthread_sigmask(signal.SIG_BLOCK, [int(getattr(signal, n)) for n in FORWARDED_SIGNALS])
    try:
        sock.sendmsg([struct.pack("!I", len(request))],
                     [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])
        sock.sendall(request)
    except OSError:  # a closed stdin/stdout/stderr, a deleted working directory, a stuck peer
        return None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, waiting)
    # The child that said it is ready reads the request at once: no time limit from here (one
    # would risk the command running there and here), but Ctrl-C still ends the wait (_Abort).
    sock.settimeout(None)
    accepted = _read(sock, 5)
    if len(accepted) < 5 or accepted[0] != 1:
        return None
    return struct.unpack("!i", accepted[1:])[0]


def _read(sock: _socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError:  # a timeout, a reset: what came so far
            chunk = b""
        if not chunk:
            break
        data += chunk
    return data


def start_warm(path: str) -> None:
    """Start the warm process for ``path`` in the background, detached from this session."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                # Nothing of the caller's stays open for the warm process's lifetime: a pipe
                # its caller reads to the end would not end.
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                os.chdir("/")
                import subprocess  # here only: the flags this interpreter runs with (-X, -P, -O ...)

                flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]  # private, stable
                os.execve(sys.executable, [sys.executable, *flags, "-c", "import sys; sys.path[:] = sys.argv[3:]; "
                                           "from cli.warm import serve; serve(sys.argv[1], int(sys.argv[2]))",
                                           path, str(IDLE_S), *_search_path()], warm_environ(os.environ))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def warm_environ(environ) -> dict[str, str]:
    """The warm process's environment: what its imports read, and no secret."""
    return {k: v for k, v in environ.items()
            if (k.startswith(IMPORT_TIME_ENV) or k in WARM_ENV) and not k.upper().endswith(SECRET_SUFFIXES)
            and not ("://" in v and "@" in v)}  # a URL with credentials


def socket_path() -> str | None:
    """Where the warm process for this code, interpreter and process identity listens: a socket
    in a folder only this user may enter, or None when there is no such folder."""
    try:
        from _blake2 import blake2b  # hashlib would load OpenSSL: 5 ms
    except ImportError:
        from hashlib import blake2b

    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = os.path.join(runtime, "cellar") if runtime else f"/tmp/cellar-{uid}"
    if len(folder) > MAX_SOCKET_PATH - 38:
        return None
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    st = os.lstat(folder)
    if not (st.st_uid == uid and (st.st_mode & 0o170077) == 0o040000):  # a dir of ours, private
        return None
    path = os.path.join(folder, blake2b(_identity(), digest_size=16).hexdigest() + ".sock")
    return path if len(path.encode()) <= MAX_SOCKET_PATH else None


def _identity() -> bytes:
    """Everything that, when it differs, must not share a warm process: the interpreter and the
    code it would import, environment read at import time, and what a child inherits."""
    parts = [sys.executable, sys.version, repr(_search_path()), repr(sys.flags), *code_stamps()]
    parts.extend(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(IMPORT_TIME_ENV))
    parts.extend(privileges())
    import resource

    parts.extend(f"{n}={resource.getrlimit(getattr(resource, n))}"
                 for n in sorted(dir(resource)) if n.startswith("RLIMIT_"))
    parts.append(repr(os.getpriority(os.PRIO_PROCESS, 0)))
    return "\0".join(parts).encode("utf-8", "surrogateescape")


def code_stamps() -> list[str]:
    """The code a warm process would import: the search path's entries (a package installed,
    removed or upgraded changes its folder) and every file of ``cli`` and ``registry``."""
    parts = [_stamp(entry) for entry in _search_path()]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in ("cli", "registry"):
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs.sort()
            parts.extend(_stamp(os.path.join(folder, f)) for f in sorted(files) if f.endswith(".py"))
    return parts


def _search_path() -> list[str]:
    """sys.path with its relative entries ('' under `python -c`) made absolute: the warm
    process runs in / and must import what this process would."""
    return [os.path.abspath(entry) for entry in sys.path]


def privileges(proc: int | str = "self") -> list[str]:
    """What a process may do and see, from /proc: uids, groups, capabilities, seccomp, CPU and
    memory affinity, cgroup, namespaces. The warm process refuses a client whose privileges
    differ from its own (a sandboxed process of the same user must not use an unsandboxed one)."""
    with open(f"/proc/{proc}/status") as status:
        parts = [line for line in status if line.split(":", 1)[0] in INHERITED]
    with open(f"/proc/{proc}/cgroup") as cgroup:
        parts.append(cgroup.read())
    for ns in ("mnt", "net", "pid", "user", "ipc", "uts", "cgroup"):
        try:
            parts.append(os.readlink(f"/proc/{proc}/ns/{ns}"))
        except OSError:
            parts.append(ns)
    return parts


def _stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return path
    return f"{path}:{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


if __name__ == "__main__":
    main()
