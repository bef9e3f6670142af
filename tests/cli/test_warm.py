"""The warm process (cli/warm.py, cli/launch.py): a command run through it behaves as the same
command run in-process (output, exit status, environment, directory, signals, kill -9), only
its owner may use it, and it goes away when idle.

The tests that leave a warm process as they found it share one per module (``warm``); those
that stop, kill or open it up start their own (``own_warm``). The client side is
``cli.launch.run_warm`` in a fresh interpreter, as the console script calls it.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = str(Path(sys.executable).with_name("registry"))
# The warm processes these tests start, stop, kill or open up import only the CLI ahead (their
# commands' children import the rest, as in-process): their lifecycle is under test. The full
# preload (cli.warm._preload, 1.4 s of CPU a start) is the shared ``warm`` fixture's, and that of
# the warm process every other test's ``registry`` command goes through (tests/conftest.py).
LIGHT = "import cli.warm; cli.warm._preload = lambda: __import__('cli.main'); "
SERVE = "import sys; " + LIGHT + "from cli.warm import serve; "
CLIENT = ("import sys; from cli.launch import run_warm; code = run_warm(sys.argv[1], ['registry', *sys.argv[2:]]); "
          "sys.exit(99 if code is None else code)")  # 99: the warm process did not take it


@pytest.fixture
def short_tmp():
    """A private folder with a short name (a socket's path has at most 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="cellar-test-", dir="/tmp")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _start_warm(folder: Path, light: bool = True):
    """A warm process serving a socket of its own in ``folder``; yields the socket path."""
    path = str(folder / "w.sock")
    # Started as by `registry ... &` from a script (SIGINT ignored) whose caller ignored SIGCHLD
    # and blocked SIGTERM: none of it may reach its commands, nor stop it from reaping them.
    serve = ("import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
             "signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
             "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM]); "
             + (LIGHT if light else "") + "from cli.warm import serve; ")
    proc = subprocess.Popen([sys.executable, "-c", serve + "serve(sys.argv[1], 60)", path],
                            cwd="/", stdin=subprocess.DEVNULL, start_new_session=True)
    _wait_for(lambda: os.path.exists(path) or proc.poll() is not None, 60)
    assert proc.poll() is None, "the warm process did not start"
    yield path
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def warm():
    """One warm process for the tests that leave it as they found it (each command of theirs
    ends before the next test): starting one costs a second of CPU, most of this file's time."""
    folder = Path(tempfile.mkdtemp(prefix="cellar-test-", dir="/tmp"))
    try:
        yield from _start_warm(folder, light=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_warm(short_tmp):
    """A warm process of this test's alone, for tests that stop, kill or open it up."""
    yield from _start_warm(short_tmp)


@pytest.fixture(scope="module")
def _home_with_v1(tmp_path_factory) -> Path:
    from registry.api import Registry
    from tests import helpers

    root = tmp_path_factory.mktemp("v1")
    reg, _ = Registry.init(root / "home")
    try:
        reg.push(helpers.ModelDir.create(root / "model", version="v1").manifest)
    finally:
        reg.close()
    return root / "home"


@pytest.fixture
def home_with_v1(_home_with_v1, monkeypatch) -> Path:
    """A home holding v1, shared by the tests that only read it (REGISTRY_HOME set)."""
    monkeypatch.setenv("REGISTRY_HOME", str(_home_with_v1))
    return _home_with_v1


def _wait_for(ready, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def client(path: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLIENT, path, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def through_warm(path: str, *args: str, **kw) -> subprocess.CompletedProcess:
    proc = client(path, *args, **kw)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def in_process(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**kw.pop("env", os.environ), "REGISTRY_WARM": "0"}
    return subprocess.run([REGISTRY, *args], capture_output=True, text=True, env=env, timeout=60, **kw)


@pytest.mark.parametrize("args", [("--help",), ("list", "--json"), ("show", "v1", "--json"), ("list", "--bogus"),
                                  ("show", "v9"), ("log", "--limit", "3")], ids=" ".join)
def test_same_output_and_status_as_in_process(warm, home_with_v1, args):
    here, there = in_process(*args), through_warm(warm, *args)
    assert (there.returncode, there.stdout, there.stderr) == (here.returncode, here.stdout, here.stderr)
    assert here.returncode != 99


def test_environment_directory_and_umask_are_the_clients(warm, tmp_path):
    env = {**os.environ, "REGISTRY_HOME": "relative/home"}
    proc = subprocess.Popen([sys.executable, "-c", "import os, sys; os.umask(0o077); exec(sys.argv.pop(1))",
                             CLIENT, warm, "init"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    home = tmp_path / "relative" / "home"
    assert (home / "registry.db").is_file()
    assert os.stat(home / "registry.db").st_mode & 0o077 == 0


def _silent_server() -> socket.socket:
    """A TCP listener that accepts and never answers: a database connection to it blocks."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    return srv


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(c) for c in f.read().split()}


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _warm_pid(path: str) -> int:
    """The warm process serving ``path`` (its children have the same command line)."""
    found = set(_processes_mentioning(path))
    tops = [pid for pid in found if _parent(pid) not in found]
    assert len(tops) == 1, f"no single warm process for {path}: {sorted(found)}"
    return tops[0]


def _socket_path(xdg: Path, cwd: Path = ROOT) -> str:
    """Where ``registry`` run with XDG_RUNTIME_DIR=xdg from ``cwd`` (under python -c) looks."""
    return subprocess.run([sys.executable, "-c", "import cli.launch as l; print(l.socket_path())"],
                          capture_output=True, text=True, check=True, cwd=cwd,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(xdg)}).stdout.strip()


# A client as started from a terminal: a test run in the background (`pytest &`, CI) inherits
# SIGINT ignored, and the client then rightly keeps it ignored for the command.
TERMINAL = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "signal.signal(signal.SIGTERM, signal.SIG_DFL); signal.signal(signal.SIGHUP, signal.SIG_DFL); ")


def _start_blocked(warm: str, setup: str = "", **popen) -> tuple[subprocess.Popen, int, socket.socket]:
    """A command that blocks (connecting to a database that never answers), its client started
    as from a terminal and then running ``setup``: (client, the command's pid, the silent server)."""
    srv = _silent_server()
    url = f"postgresql+psycopg://u:p@127.0.0.1:{srv.getsockname()[1]}/db"
    server = _warm_pid(warm)
    _wait_for(lambda: len(_children(server)) == 1, 30)
    spare = _children(server)  # the child forked ahead: it will run the command
    proc = subprocess.Popen([sys.executable, "-c", TERMINAL + setup + "import sys; exec(sys.argv.pop(1))", CLIENT, warm,
                             "list"],
                            env={**os.environ, "REGISTRY_DB_URL": url}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)
    _wait_for(lambda: _children(server) - spare, 30)  # the next spare: the command has started
    (child,) = spare
    time.sleep(0.3)  # into the connect
    return proc, child, srv


@pytest.fixture
def blocked(warm, sqlite_home):
    proc, child, srv = _start_blocked(warm)
    yield proc, child
    proc.kill()
    proc.wait()
    srv.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_client_reaches_the_command(blocked, sig):
    proc, child = blocked
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    assert proc.returncode == -sig  # the command died of it, and so did the client
    _wait_for(lambda: not os.path.exists(f"/proc/{child}"), 10)


def test_ctrl_c_interrupts_the_command(blocked):
    proc, child = blocked
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode not in (0, 99), err
    _wait_for(lambda: not os.path.exists(f"/proc/{child}"), 10)


def test_kill_9_of_the_client_stops_the_command(blocked):
    proc, child = blocked
    proc.kill()
    proc.wait()
    _wait_for(lambda: not os.path.exists(f"/proc/{child}"), 5)


def test_a_command_killed_by_a_signal_kills_the_client_alike(warm, sqlite_home, model_dir):
    env = {**os.environ, "CELLAR_CRASH_AT": "push:blobs-stored"}
    done = through_warm(warm, "push", str(model_dir.manifest), "--version", "v1", env=env)
    assert done.returncode == -signal.SIGKILL


def test_only_its_owner_may_connect(own_warm):
    assert os.stat(own_warm).st_mode & 0o777 == 0o600
    os.chmod(own_warm, 0o777)  # even then, the peer's uid is checked
    os.chmod(os.path.dirname(own_warm), 0o711)
    pid = os.fork()
    if pid == 0:  # as nobody: the warm process must not take the command
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            from cli.launch import run_warm

            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            refused = run_warm(own_warm, ["registry", "--help"]) is None  # the client sees a stranger
            raw = socket.socket(socket.AF_UNIX)  # and the warm process refuses one that does not look
            raw.connect(own_warm)
            req = marshal.dumps({"argv": ["registry", "--help"], "env": {}, "cwd": "/", "umask": 0o022,
                                 "ignored": [], "stdio": [None, None, None]})
            try:
                socket.send_fds(raw, [struct.pack("!I", len(req))], [0, 1, 2])
                raw.sendall(req)
                accepted = raw.recv(1)
            except (BrokenPipeError, ConnectionResetError):  # refused and closed, early or late
                accepted = b""
            code = 0 if refused and accepted == b"" else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_ctrl_z_stops_the_command_and_fg_resumes_it(warm, sqlite_home):
    # A job of its own, as a shell with job control starts it: in an orphaned process group
    # (a test run in the background, CI) the kernel discards a stop, in-process as well.
    proc, child, srv = _start_blocked(warm, process_group=0)
    try:
        proc.send_signal(signal.SIGTSTP)
        _wait_for(lambda: _state(child) == "T" and _state(proc.pid) == "T", 10)
        proc.send_signal(signal.SIGCONT)
        _wait_for(lambda: _state(child) != "T" and _state(proc.pid) != "T", 10)
    finally:
        proc.kill()
        proc.wait()
        srv.close()


def test_a_command_that_ends_while_the_warm_process_is_stopped(own_warm, sqlite_home):
    """Its exit and its client's end can reach the warm process in the same wake-up."""
    srv = _silent_server()
    srv.settimeout(30)
    url = f"postgresql+psycopg://u:p@127.0.0.1:{srv.getsockname()[1]}/db"
    server = _warm_pid(own_warm)
    _wait_for(lambda: len(_children(server)) == 1, 30)
    (child,) = _children(server)
    proc = client(own_warm, "list", env={**os.environ, "REGISTRY_DB_URL": url})
    peer, _ = srv.accept()  # the command connects...
    os.kill(server, signal.SIGSTOP)
    peer.close()  # ...and fails at once
    _wait_for(lambda: not os.path.exists(f"/proc/{child}") or _state(child) == "Z", 30)
    proc.kill()
    proc.wait()
    os.kill(server, signal.SIGCONT)
    time.sleep(0.5)
    assert through_warm(own_warm, "--help").returncode == 0
    srv.close()


def test_it_removes_only_its_own_socket(short_tmp):
    path = str(short_tmp / "w.sock")
    proc = subprocess.Popen([sys.executable, "-c", SERVE + "serve(sys.argv[1], 2)",
                             path], cwd="/", stdin=subprocess.DEVNULL)
    _wait_for(lambda: os.path.exists(path), 60)
    os.rename(path, path + ".old")  # a newer warm process took the path meanwhile
    newer = socket.socket(socket.AF_UNIX)
    newer.bind(path)
    assert proc.wait(timeout=30) == 0
    assert os.path.exists(path)
    newer.close()


def test_the_first_command_runs_when_its_caller_ignores_sigchld(short_tmp, sqlite_home):
    done = subprocess.run([sys.executable, "-c", "import os, signal, sys; "
                           "signal.signal(signal.SIGCHLD, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])",
                           REGISTRY, "list", "--json"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(short_tmp)})
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr
    # the warm process it started (in the background: it names its socket once it has exec'd)
    _wait_for(lambda: list((short_tmp / "cellar").glob("*.sock")), 60)
    for pid in _processes_mentioning(str(short_tmp)):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["PYTHONUNBUFFERED", "buffered"])
def test_a_closed_pipe_on_stdout_ends_as_in_process(warm, home_with_v1, unbuffered):
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    results = []
    for args, run_env in (([REGISTRY, "list", "--json"], {**env, "REGISTRY_WARM": "0"}),
                          ([sys.executable, "-c", CLIENT, warm, "list", "--json"], env)):
        r, w = os.pipe()
        os.close(r)  # nobody reads: the first write fails with EPIPE
        try:
            results.append(subprocess.run(args, stdout=w, stderr=subprocess.PIPE, env=run_env, timeout=60).returncode)
        finally:
            os.close(w)
    assert results[0] == results[1]


def test_it_exits_when_idle_and_removes_its_socket(short_tmp):
    path = str(short_tmp / "w.sock")
    proc = subprocess.Popen([sys.executable, "-c", SERVE + "serve(sys.argv[1], 2)",
                             path], cwd="/", stdin=subprocess.DEVNULL)
    _wait_for(lambda: os.path.exists(path), 60)
    assert through_warm(path, "--help").returncode == 0
    assert proc.wait(timeout=30) == 0
    assert not os.path.exists(path)


def test_one_warm_process_per_socket(warm):
    second = subprocess.run([sys.executable, "-c", SERVE + "serve(sys.argv[1], 60)",
                             warm], cwd="/", timeout=60)
    assert second.returncode == 0  # it found the lock held and left
    assert through_warm(warm, "--help").returncode == 0


def test_identity_follows_code_and_import_time_environment(short_tmp, monkeypatch):
    def path(**extra) -> str:
        with monkeypatch.context() as m:
            for key, value in extra.items():
                m.setenv(key, value)
            return _socket_path(short_tmp)

    first = path()
    assert first.startswith(str(short_tmp / "cellar")) and first == path(REGISTRY_HOME="/elsewhere")
    assert path(PYTHONWARNINGS="ignore") != first
    assert path(LC_ALL="C") != first  # the interpreter took its locale at start
    source = ROOT / "registry" / "clock.py"
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    try:
        assert path() != first  # edited code: a new warm process, never stale code
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_no_warm_process_where_its_socket_would_not_fit(tmp_path):
    assert _socket_path(tmp_path / ("d" * 100)) == "None"


@pytest.mark.parametrize("args,env", [(("--help",), {"REGISTRY_WARM": "0"}), (("watch", "--help"), {})],
                         ids=["REGISTRY_WARM=0", "watch"])
def test_in_process_when_asked_and_for_long_running_commands(tmp_path, args, env):
    done = subprocess.run([REGISTRY, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), **env})
    assert done.returncode == 0
    assert not (tmp_path / "cellar").exists()


def test_console_script_starts_it_and_then_uses_it(short_tmp, sqlite_home):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(short_tmp)}
    first = subprocess.run([REGISTRY, "list", "--json"], capture_output=True, text=True, env=env, timeout=60)
    folder = short_tmp / "cellar"
    _wait_for(lambda: list(folder.glob("*.sock")), 60)
    (sock,) = folder.glob("*.sock")
    server = _warm_pid(str(sock))
    try:
        assert oct(folder.stat().st_mode & 0o777) == oct(0o700)
        second = subprocess.run([REGISTRY, "list", "--json"], capture_output=True, text=True, env=env, timeout=60)
        assert (second.returncode, second.stdout) == (first.returncode, first.stdout) == (0, "[]\n")
        assert json.loads(second.stdout) == []
    finally:
        os.kill(server, signal.SIGKILL)


def test_a_signal_the_client_ignores_is_ignored_by_the_command(warm, sqlite_home):
    """nohup registry ... keeps running when the terminal hangs up."""
    proc, child, srv = _start_blocked(warm, "import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN); ")
    try:
        proc.send_signal(signal.SIGHUP)
        os.kill(child, signal.SIGHUP)  # as a hangup would, if it reached the command directly
        time.sleep(0.5)
        assert proc.poll() is None and os.path.exists(f"/proc/{child}")
    finally:
        proc.kill()
        proc.wait()
        srv.close()


def test_a_lost_spare_is_replaced(warm):
    server = _warm_pid(warm)
    _wait_for(lambda: len(_children(server)) == 1, 30)
    (spare,) = _children(server)
    os.kill(spare, signal.SIGKILL)
    _wait_for(lambda: _state(spare) == "Z", 10)
    done = through_warm(warm, "--help")
    assert done.returncode == 0 and "Usage: registry" in done.stdout
    assert not os.path.exists(f"/proc/{spare}")  # reaped


def test_the_warm_process_keeps_nothing_of_its_starter(short_tmp):
    """A pipe the first command inherited is not held open by the warm process it started: a
    caller reading that pipe to its end is not kept waiting for 10 minutes."""
    r, w = os.pipe()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(short_tmp)}
    subprocess.run([REGISTRY, "--help"], pass_fds=(w,), env=env, stdout=subprocess.DEVNULL, timeout=60, check=True)
    os.close(w)
    _wait_for(lambda: list((short_tmp / "cellar").glob("*.sock")), 60)
    (sock,) = (short_tmp / "cellar").glob("*.sock")
    server = _warm_pid(str(sock))
    try:
        os.set_blocking(r, False)
        assert os.read(r, 1) == b""  # end of file: no writer left (BlockingIOError if one were)
    finally:
        os.kill(server, signal.SIGKILL)
        os.close(r)


@pytest.mark.parametrize("spoil", ["open to others", "a symlink", "another owner"])
def test_no_warm_process_in_a_folder_not_private(short_tmp, spoil):
    """Someone who made the socket folder first (or a link to theirs) gets no socket of ours:
    the command runs in-process."""
    folder = short_tmp / "cellar"
    if spoil == "open to others":
        folder.mkdir(mode=0o755)
        os.chmod(folder, 0o755)
    elif spoil == "a symlink":
        (short_tmp / "theirs").mkdir(mode=0o700)
        folder.symlink_to(short_tmp / "theirs")
    else:
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)
    assert _socket_path(short_tmp) == "None"
    done = subprocess.run([REGISTRY, "--help"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(short_tmp)})
    assert done.returncode == 0 and "Usage: registry" in done.stdout
    assert not list(short_tmp.rglob("*.sock"))


def test_it_survives_a_client_that_sends_nonsense(warm):
    """Bytes after a request are ignored (a client signals its command through a pidfd), and a
    request that is not one leaves the warm process serving."""
    raw = """
import marshal, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
req = marshal.dumps({"argv": ["registry", "--help"], "env": dict(os.environ), "cwd": "/", "umask": 0o022,
                     "ignored": [], "stdio": [None, ("utf-8", "strict", False), ("utf-8", "strict", False)]})
socket.send_fds(s, [struct.pack("!I", len(req))], [0, 1, 2])
s.sendall(req + bytes([0, 77, 255]))
ready = s.recv(1)  # sent ahead of it: the child may read it now
accepted = s.recv(1) + s.recv(4)  # the accept byte and the command's pid
print(ready == b"\\x02" and accepted[:1] == b"\\x01" and s.recv(4) == struct.pack("!i", 0), file=sys.stderr)
junk = socket.socket(socket.AF_UNIX)
junk.connect(sys.argv[1])
junk.sendall(b"not a request at all")
answer = b""
try:
    while chunk := junk.recv(16):
        answer += chunk
except ConnectionResetError:
    pass
print(answer in (b"", b"\\x02"), file=sys.stderr)  # ready at most, then closed: nothing accepted
"""
    done = subprocess.run([sys.executable, "-c", raw, warm], capture_output=True, text=True, timeout=60)
    assert done.stderr.split() == ["True", "True"], done.stderr
    assert through_warm(warm, "--help").returncode == 0


def test_a_relative_import_path_means_the_callers_directory(short_tmp, tmp_path):
    """Under `python -c` the search path starts with '' (the current directory): the warm process
    imports from the caller's directory, not its own, and another directory is another identity."""
    assert _socket_path(short_tmp, ROOT) != _socket_path(short_tmp, tmp_path)


# --- when things go wrong around it (issue 21): stopped or hung, killed mid-command, superseded,
# on a kernel without pidfds; and what it keeps of its caller ------------------------------------


def test_a_stopped_warm_process_costs_a_moment_then_the_command_runs_here(own_warm, tmp_path):
    """SIGSTOP'ed (or hung) before it took the command: the client gives up after HANDOFF_S (99:
    the console script would now run it in-process), nothing of the client's is left queued
    there (a pipe it held ends), and resumed, the warm process does not run it after all."""
    from cli.launch import HANDOFF_S

    server = _warm_pid(own_warm)
    fresh = tmp_path / "fresh"
    os.kill(server, signal.SIGSTOP)
    try:
        started = time.monotonic()
        proc = client(own_warm, "init", str(fresh))
        out, _ = proc.communicate(timeout=HANDOFF_S + 30)  # its stdout pipe ends: no copy of it is queued
        assert proc.returncode == 99 and time.monotonic() - started < HANDOFF_S + 30
    finally:
        os.kill(server, signal.SIGCONT)
    time.sleep(1)  # the late connection reaches a spare, which finds its client gone
    assert not fresh.exists()
    assert through_warm(own_warm, "--help").returncode == 0


def test_ctrl_c_while_a_stuck_warm_process_is_asked_ends_the_client(own_warm):
    server = _warm_pid(own_warm)
    os.kill(server, signal.SIGSTOP)
    try:
        proc = subprocess.Popen([sys.executable, "-c", TERMINAL + "import sys; exec(sys.argv.pop(1))", CLIENT, own_warm,
                                 "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # waiting for the accept byte
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGINT
    finally:
        os.kill(server, signal.SIGCONT)


def test_a_command_outlives_the_warm_process(own_warm, sqlite_home):
    """kill -9 of the warm process in the middle of a command: the command goes on to its own
    end and status (a promote is never cut short because another process died)."""
    server = _warm_pid(own_warm)
    proc, child, srv = _start_blocked(own_warm)
    try:
        os.kill(server, signal.SIGKILL)
        time.sleep(0.5)
        assert os.path.exists(f"/proc/{child}") and proc.poll() is None
        srv.close()  # the database goes away: the command fails on its own, and says so
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "ended without an exit status" not in err, err
    finally:
        proc.kill()
        srv.close()


def test_the_warm_process_holds_no_secret_of_its_caller(short_tmp, sqlite_home):
    """It starts with a minimal environment; each command's child gets its caller's."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(short_tmp), "SUPPORT_API_TOKEN": "canary-8c1e",
           "PGPASSWORD": "canary-pg", "MY_DB_URL": "postgresql://u:canary-url@h/db", "LD_BIND_NOW": "1"}
    subprocess.run([REGISTRY, "--help"], env=env, stdout=subprocess.DEVNULL, timeout=60, check=True)
    _wait_for(lambda: list((short_tmp / "cellar").glob("*.sock")), 60)
    (sock,) = (short_tmp / "cellar").glob("*.sock")
    server = _warm_pid(str(sock))
    try:
        with open(f"/proc/{server}/environ", "rb") as f:
            held = f.read()
        assert b"canary" not in held and b"LD_BIND_NOW=1" in held
        shown = subprocess.run([REGISTRY, "--help"], env=env, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0
        seen = subprocess.run(
            [sys.executable, "-c", CLIENT, str(sock), "env", "add", "x", "--port", "1"], env=env, capture_output=True,
            text=True, timeout=60)
        assert seen.returncode != 99  # it ran through the warm process, with the caller's environment
    finally:
        os.kill(server, signal.SIGKILL)


def test_ld_variables_and_interpreter_flags_are_its_identity_and_passed_on(short_tmp):
    plain = _socket_path(short_tmp)
    with_ld = subprocess.run([sys.executable, "-c", "import cli.launch as l; print(l.socket_path())"],
                             capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, "XDG_RUNTIME_DIR": str(short_tmp), "LD_PRELOAD": ""}).stdout.strip()
    assert plain != with_ld
    env = {**os.environ, "XDG_RUNTIME_DIR": str(short_tmp), "REGISTRY_WARM": "1"}
    subprocess.run([sys.executable, "-X", "dev", REGISTRY, "--help"], env=env, stdout=subprocess.DEVNULL,
                   timeout=60, check=True)
    _wait_for(lambda: list((short_tmp / "cellar").glob("*.sock")), 60)
    (sock,) = (short_tmp / "cellar").glob("*.sock")
    server = _warm_pid(str(sock))
    try:
        with open(f"/proc/{server}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        assert b"-X" in args and b"dev" in args
    finally:
        os.kill(server, signal.SIGKILL)


def test_without_pidfds_it_stays_out_of_the_way(short_tmp, sqlite_home):
    """A kernel before 5.3: the warm process leaves a marker and exits at once, and commands
    run in-process without trying to start another one."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(short_tmp)}
    path = _socket_path(short_tmp)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import os, sys; del os.pidfd_open; from cli.warm import serve; "
                    "serve(sys.argv[1], 60)", path], cwd="/", timeout=60, check=True)
    assert time.monotonic() - started < 30 and os.path.exists(path.removesuffix(".sock") + ".off")
    assert not os.path.exists(path)
    # the console script's entry under `python -c` in ROOT: the identity _socket_path computed
    launch = "import sys; from cli.launch import main; sys.argv[0] = 'registry'; main()"
    done = subprocess.run([sys.executable, "-c", launch, "list", "--json"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "[]\n")
    time.sleep(1)
    assert not os.path.exists(path) and _processes_mentioning(str(short_tmp)) == []


def _copy_of_the_code(where: Path) -> Path:
    for package in ("cli", "registry"):
        shutil.copytree(ROOT / package, where / package)  # with its bytecode, if any: no compile
    return where


def _serve(path: str, code: Path, idle_s: int = 60) -> subprocess.Popen:
    serve = "import sys; sys.path.insert(0, sys.argv[2]); " + LIGHT + "from cli.warm import serve; "
    proc = subprocess.Popen([sys.executable, "-c", serve + "serve(sys.argv[1], int(sys.argv[3]))", path, str(code),
                             str(idle_s)], cwd="/", stdin=subprocess.DEVNULL, start_new_session=True)
    _wait_for(lambda: os.path.exists(path) or proc.poll() is not None, 60)
    assert proc.poll() is None
    return proc


def test_it_exits_when_its_code_changes_on_disk(short_tmp, tmp_path):
    from cli.warm import CHECK_S

    code = _copy_of_the_code(tmp_path)
    path = str(short_tmp / "w.sock")
    proc = _serve(path, code)
    try:
        os.utime(code / "registry" / "api.py")  # an edit: no client would pick this one any more
        assert proc.wait(timeout=CHECK_S + 30) == 0
        assert not os.path.exists(path)
    finally:
        proc.kill()


def test_at_most_max_warm_of_them_the_least_recently_used_goes(short_tmp):
    from cli.warm import MAX_WARM

    procs = []
    try:
        for i in range(MAX_WARM):
            procs.append(_serve(str(short_tmp / f"w{i}.sock"), ROOT))
            time.sleep(0.05)  # distinct "last used" times
        assert through_warm(str(short_tmp / "w0.sock"), "--help").returncode == 0  # w0: used last
        procs.append(_serve(str(short_tmp / f"w{MAX_WARM}.sock"), ROOT))
        assert procs[1].wait(timeout=30) == 0  # the least recently used (started, never used since)
        assert [p.poll() for p in procs] == [None, 0] + [None] * (MAX_WARM - 1)
    finally:
        for p in procs:
            p.kill()


def test_a_signal_reaches_the_command_after_the_warm_process_died(own_warm, sqlite_home):
    server = _warm_pid(own_warm)
    proc, child, srv = _start_blocked(own_warm)
    try:
        os.kill(server, signal.SIGKILL)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)  # straight to the command (a pidfd), no warm process needed
        _wait_for(lambda: not os.path.exists(f"/proc/{child}") or _state(child) == "Z", 30)
        proc.communicate(timeout=30)
        assert proc.returncode != 99
    finally:
        proc.kill()
        srv.close()


def test_a_full_queue_of_a_stuck_warm_process_does_not_block_the_client(short_tmp):
    """A warm process stopped long enough that its queue of connections filled up: connect
    itself would wait forever. It waits HANDOFF_S, then the command runs here (99)."""
    from cli.launch import HANDOFF_S

    path = str(short_tmp / "w.sock")
    stuck = socket.socket(socket.AF_UNIX)
    stuck.bind(path)
    stuck.listen(0)  # one queued connection fills it
    queued = socket.socket(socket.AF_UNIX)
    queued.connect(path)
    try:
        started = time.monotonic()
        done = through_warm(path, "--help")
        assert done.returncode == 99 and time.monotonic() - started < HANDOFF_S + 20
    finally:
        queued.close()
        stuck.close()
