"""The warm process: imports the CLI and what its commands use once, then forks a child per
command (see ``cli/launch.py`` for why and for the client's side).

One request on the Unix socket: the client's stdin/stdout/stderr as file descriptors, then its
argv, environment, working directory, umask, ignored signals and stream settings. The warm
process checks who connected and hands the connection, unread, to a child forked ahead: the
child says it is ready, and only then does the client send its descriptors and request (nothing
of the caller's, its environment and secrets included, passes through the warm process, nor
waits queued on a warm process that is stopped); the child answers an accept byte and its pid
(from here on the command counts as started, and the client signals it directly), takes the
client's descriptors as 0/1/2, its environment, directory and umask, runs ``cli.main.main`` as
the client would have, and answers its exit status itself. The command ends when its client
disappears (``kill -9`` of ``registry`` stops it, as before), and the warm process answers for
a child killed by a signal (the negative signal number). A started command outlives the warm
process: a promote is never cut short because another process died. A spare not yet used dies
with it. A request that gets no accept byte ran nowhere: its client runs it in-process.

Only the user who started it, with the same privileges, may use it (``SO_PEERCRED`` and
/proc), the socket sits in a folder only that user may enter, and after ``idle_s`` seconds
without a command it removes its socket, serves what was already queued, and exits. So it does,
sooner, when superseded: its code changed on disk (checked every ``CHECK_S``), SIGTERM, or more
than ``MAX_WARM`` warm processes of this user (the least recently used go). One warm process
per socket: a lock file decides, and holds its pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import io
import marshal
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time

from cli.launch import FORWARDED_SIGNALS, code_stamps, privileges

MAX_REQUEST = 16 << 20
REQUEST_S = 5  # a client has this long to send its request
PR_SET_PDEATHSIG = 1
CHECK_S = 5.0  # how often an idle warm process looks whether its code changed on disk
MAX_WARM = 3  # warm processes of one user at once (other code, cgroups, privileges); LRU beyond


def serve(path: str, idle_s: int) -> None:
    lock = os.open(path.removesuffix(".sock") + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another warm process serves this socket
    if not _has_pidfds():  # it could not tell when a command ends: stay out of the way, for good
        with open(path.removesuffix(".sock") + ".off", "w"):
            pass
        return
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    stamps = code_stamps()
    # Whatever its starter ignored or blocked (SIGCHLD ignored would reap children before
    # waitpid could), the warm process and its children start from the defaults.
    for name in ("SIGCHLD", *FORWARDED_SIGNALS):
        signal.signal(getattr(signal, name), _python_default(getattr(signal, name)))
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # and nothing blocked
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fresh = f"{path}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(fresh)
    listener.bind(fresh)
    os.chmod(fresh, 0o600)
    listener.listen(128)
    os.rename(fresh, path)  # replaces the socket of a warm process that was killed
    server = Server(listener, lock, path, stamps)
    _evict_beyond(os.path.dirname(path), MAX_WARM, own=lock)
    gc.collect()
    gc.freeze()  # children neither scan nor copy the imported heap
    try:
        server.run(idle_s)
    finally:
        server.unlink()


def _has_pidfds() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
        return True
    except (AttributeError, OSError):  # Linux before 5.3, or a seccomp filter that refuses it
        return False


def _evict_beyond(folder: str, keep: int, *, own: int) -> None:
    """Ask the least recently used warm processes of this user to go, beyond ``keep`` (each
    touches its lock file when it takes a command). A lock file nobody holds is left alone."""
    alive = []
    for name in os.listdir(folder):
        if not name.endswith(".lock"):
            continue
        try:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_ino == os.fstat(own).st_ino:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                continue  # nobody holds it: no warm process there
            except BlockingIOError:
                pid = int(os.read(fd, 32).split()[0])
                alive.append((os.fstat(fd).st_mtime, pid))
        except (OSError, ValueError, IndexError):
            continue
        finally:
            os.close(fd)
    for _used, pid in sorted(alive, reverse=True)[keep - 1:]:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"cli.warm" in f.read():
                    os.kill(pid, signal.SIGTERM)  # it finishes what it serves, then exits


def _preload() -> None:
    """Import what any command may import, so that no child imports anything."""
    import importlib
    import pkgutil

    import cli.main  # the commands, typer, rich
    import registry

    for mod in pkgutil.walk_packages(registry.__path__, "registry."):
        if not mod.name.startswith("registry.web"):  # `registry ui` runs in its own process
            importlib.import_module(mod.name)
    for name in ("sqlalchemy.dialects.sqlite.pysqlite", "sqlalchemy.dialects.postgresql.psycopg", "psycopg",
                 "docker"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # typer turns the app into click commands on every call (28 ms); click commands are meant to
    # be built once and called many times, so here they are.
    import typer.main

    built, build = typer.main.get_command(cli.main.app), typer.main.get_command
    typer.main.get_command = lambda typer_instance: built if typer_instance is cli.main.app else build(typer_instance)
    # What typer and rich build on first use (the click commands' help, markup and table
    # styles, regexes) is built here once: 0.2 s a child would otherwise spend on `--help`.
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for args in (["--help"], ["push", "--help"], ["no-such-command"]):
            with contextlib.suppress(SystemExit):
                cli.main.app(args, prog_name="registry")


class Server:
    """The accept loop. One child is forked ahead (the spare) and waits on a socket pair, so a
    command does not wait for the fork (~8 ms of ~100 MB here): it gets the client's socket,
    descriptors and request, answers the accept byte itself, and the next spare is forked after
    it started. Nothing a client sends or a failed fork can stop the loop; a command that could
    not be handed over gets no accept byte, and its client runs it in-process."""

    def __init__(self, listener: socket.socket, lock: int, path: str, stamps: list[str]):
        self.listener, self.lock, self.path, self.stamps = listener, lock, path, stamps
        self.inode = os.stat(path).st_ino
        self.own = privileges()
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, ("accept", 0))
        # SIGTERM asks it to go (the newest warm process evicting the least recently used): a
        # byte on this pair wakes the loop, which stops taking commands and serves the rest.
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", 0))
        self.asked_to_go = False
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._go)
        self.jobs: dict[int, tuple[socket.socket, int]] = {}  # pid -> (client, pidfd)
        self.spare: tuple[int, socket.socket, int] | None = None  # pid, our end of its pair, pidfd

    def _go(self, _signum, _frame) -> None:
        self.asked_to_go = True

    def superseded(self) -> bool:
        """Asked to go, or its code changed on disk: a client would not pick it any more."""
        return self.asked_to_go or code_stamps() != self.stamps

    def run(self, idle_s: int) -> None:
        last = checked = time.monotonic()
        closing = False
        while True:
            if self.spare is None and not closing:
                self.spare = self._fork_spare()
            now = time.monotonic()
            stale = now - checked >= CHECK_S
            if not closing and ((not self.jobs and now - last >= idle_s) or self.asked_to_go
                                or (stale and self.superseded())):
                self.unlink()  # no new clients; the ones already queued are still served
                closing = True
            if stale:
                checked = now
            timeout: float | None
            if closing:
                timeout = 0 if not self.jobs else None
            elif self.spare is None:
                timeout = 1.0  # fork failed (no memory, a pids limit): try again soon
            else:
                timeout = min(CHECK_S, max(idle_s - (now - last), 0.1))
            events = self.sel.select(timeout)
            if closing and not events and not self.jobs:
                return
            for key, _ in events:
                kind, pid = key.data
                if kind == "wake":
                    with contextlib.suppress(OSError):
                        self.wake_r.recv(64)
                elif kind == "accept":
                    last = time.monotonic()
                    self.accept()
                elif pid in self.jobs:
                    self.finished(pid)

    def unlink(self) -> None:
        """Remove our socket, not one a newer warm process put at the same path."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:  # out of descriptors, or the client gave up: it runs the command itself
            return
        try:
            pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid() or privileges(pid) != self.own:  # not ours, or less privileged
                raise OSError("another user, or a process with other privileges")
            # The request (its descriptors, argv, the caller's environment) is the child's to read.
            pid, pidfd = self._hand_over(conn)
        except (OSError, struct.error):  # nothing sent to it: it runs in-process
            conn.close()
            return
        self.jobs[pid] = (conn, pidfd)
        self.sel.register(pidfd, selectors.EVENT_READ, ("exit", pid))
        with contextlib.suppress(OSError):
            os.utime(self.lock)  # last used: the least recently used warm process goes first

    def _hand_over(self, conn: socket.socket) -> tuple[int, int]:
        """Give the connection to the spare (a fresh one if it died); its pid and pidfd."""
        for attempt in range(2):
            spare, self.spare = self.spare or self._fork_spare(conn), None
            if spare is None:
                raise OSError("cannot fork")
            pid, pair, pidfd = spare
            try:
                socket.send_fds(pair, [b"c"], [conn.fileno()])
                return pid, pidfd
            except OSError:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                os.close(pidfd)
                if attempt:
                    raise
            finally:
                pair.close()
        raise AssertionError("unreachable")

    def finished(self, pid: int) -> None:
        conn, pidfd = self.jobs.pop(pid)
        _, status = os.waitpid(pid, 0)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        # A child that took the command answered its status itself just before it exited; one
        # killed by a signal could not, so the warm process answers for it (a negative number).
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            with contextlib.suppress(OSError):
                conn.sendall(struct.pack("!i", code))
        conn.close()

    def _fork_spare(self, *inherited) -> tuple[int, socket.socket, int] | None:
        """A child forked ahead; None when the system will not fork now. ``inherited``: the
        connection being handed over, which this child must not keep a second copy of."""
        try:
            ours, theirs = socket.socketpair()
        except OSError:
            return None
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            ours.close()
            self._spare(theirs, inherited)  # never returns
        theirs.close()
        try:
            return pid, ours, os.pidfd_open(pid)
        except OSError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            ours.close()
            return None

    def _spare(self, pair: socket.socket, inherited) -> None:
        """The spare child: drop what is the warm process's, wait for a command, run it."""
        code = 1
        conn = started = None  # the client's connection; the same once it took the command
        try:
            parent = os.getppid()
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                return
            # Nothing of the warm process's may stay open here: not its lock (a new warm
            # process could not start), nor another command's socket (its client would not
            # see that the warm process died).
            signal.set_wakeup_fd(-1)
            self.sel.close()
            self.listener.close()
            self.wake_r.close()
            self.wake_w.close()
            os.close(self.lock)
            for other, pidfd in self.jobs.values():
                if other is not None:
                    other.close()
                os.close(pidfd)
            if inherited:
                os.close(inherited[0].detach())
            _, given, _, _ = socket.recv_fds(pair, 1, 1)
            if len(given) != 1:
                code = 0  # the warm process is closing: never used
                return
            pair.close()
            os.set_inheritable(given[0], False)  # a subprocess of the command must not hold it
            conn = socket.socket(fileno=given[0])
            # Ready: only now does the client send its descriptors, to this live process. One
            # queued on a stopped warm process would hold the client's pipes open (a `registry
            # list | tail` that never ends).
            conn.sendall(b"\x02")
            fds, request = _read_request(conn)
            # Accepted: from here on the command counts as started, the client signals this
            # process directly, and it no longer dies with the warm process.
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)
            conn.sendall(b"\x01" + struct.pack("!i", os.getpid()))
            started = conn
            threading.Thread(target=_die_with_client, args=(conn,), name="cellar-client", daemon=True).start()
            for fd, fd_from in enumerate(fds):
                os.dup2(fd_from, fd)
                os.close(fd_from)
            os.environ.clear()
            os.environ.update(request["env"])
            time.tzset()  # the client's TZ
            os.chdir(request["cwd"])
            os.umask(request["umask"])
            # The client's dispositions, not the ones the warm process was started with (its
            # starter may have ignored SIGINT, as `cmd &` does): ignored where the client ignores
            # them (nohup's SIGHUP), else Python's defaults.
            for name in FORWARDED_SIGNALS:
                signum = getattr(signal, name)
                signal.signal(signum, signal.SIG_IGN if signum in request["ignored"] else _python_default(signum))
            _streams(request["stdio"])
            sys.argv = request["argv"]
            from cli.main import main

            try:
                main()
                code = 0
            except SystemExit as exc:
                code = _exit_code(exc.code)
            except BaseException:  # as the interpreter would: through the hook typer installed
                sys.excepthook(*sys.exc_info())
            finally:
                loaded = sys.modules.get("threading")
                if loaded is not None and hasattr(loaded, "_shutdown"):
                    loaded._shutdown()  # non-daemon threads finish, as at interpreter exit
                import atexit

                atexit._run_exitfuncs()
        except BaseException:
            with contextlib.suppress(BaseException):
                import traceback

                traceback.print_exc()
        finally:
            code = _flush_as_python_does(code)
            if started is not None:  # a request never accepted gets no status: it ran nowhere
                # Answer before exiting: tearing down the heap takes ~8 ms the client need not
                # wait. Every other descriptor is closed first, so that its locks, the
                # database and the client's pipes are released by the time the client exits.
                fd = started.fileno()
                os.closerange(0, fd)
                os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
                with contextlib.suppress(OSError):
                    os.write(fd, struct.pack("!i", code))
            os._exit(code)


def _die_with_client(conn: socket.socket) -> None:
    """When the client is gone (``kill -9`` of ``registry``, its terminal closed), so is the
    command, as it would be in-process: whether or not the warm process still runs."""
    with contextlib.suppress(OSError):
        while conn.recv(64):  # a client sends nothing after its request
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def _read_request(conn: socket.socket) -> tuple[list[int], dict]:
    """The client's stdin/stdout/stderr and request, within REQUEST_S. marshal, not JSON: the
    client's start-up does not import json. Only a process of this user with these privileges
    gets here."""
    deadline = time.monotonic() + REQUEST_S
    conn.settimeout(REQUEST_S)
    head, fds, _, _ = socket.recv_fds(conn, 4, 3)
    if len(head) != 4 or len(fds) != 3:
        raise OSError("not a request")
    (size,) = struct.unpack("!I", head)
    if size > MAX_REQUEST:
        raise OSError("request too large")
    body = bytearray()
    while len(body) < size:
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise OSError("short request")
        body += chunk
    conn.settimeout(None)
    request = marshal.loads(body)
    if not isinstance(request, dict):
        raise ValueError("not a request")
    return fds, request


def _python_default(signum: int):
    """The disposition a fresh interpreter gives ``signum``: KeyboardInterrupt for SIGINT."""
    return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL


def _flush_as_python_does(code: int) -> int:
    """Flush stdout and stderr as the interpreter does at exit: a failed stdout (a closed pipe)
    is reported on stderr and makes the exit status 120."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except Exception as exc:
        with contextlib.suppress(BaseException):
            sys.stderr.write(f"Exception ignored on flushing sys.stdout:\n{type(exc).__name__}: {exc}\n")
        code = 120
    with contextlib.suppress(BaseException):
        if sys.stderr is not None:
            sys.stderr.flush()
    return code


def _streams(specs: list) -> None:
    """sys.stdin/stdout/stderr over the client's descriptors, as the interpreter made the
    client's: its encodings; stdout line-buffered on a terminal, stderr always; unbuffered as
    under -u or PYTHONUNBUFFERED when the client's were."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        spec = specs[fd]
        stream = None
        if spec is not None:
            encoding, errors, unbuffered = spec
            raw = io.FileIO(fd, mode, closefd=False)
            raw.name = f"<{name}>"
            write_through = mode == "w" and unbuffered
            buffer = raw if write_through else (io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw))
            line = mode == "w" and (fd == 2 or os.isatty(fd))
            stream = io.TextIOWrapper(buffer, encoding=encoding, errors=errors, line_buffering=line,
                                      write_through=write_through)
            stream.mode = mode  # type: ignore[misc]  # read-only in typeshed; open() sets it so too
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
