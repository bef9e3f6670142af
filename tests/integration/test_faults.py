"""Bad input and faults: rejected before anything is written; kill -9 and a full disk leave
either a complete version or nothing, never a wrong blob, and no temp file after the next command.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from registry.api import Registry
from registry.errors import ManifestError, NoSpace, NotFound
from registry.store.files.blobs import process_alive
from registry.store.sql import schema as t
from tests import helpers
from tests.conftest import need

REGISTRY = str(Path(sys.executable).with_name("registry"))


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([REGISTRY, *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, **kw)


def counts(home: Path) -> dict[str, int]:
    with Registry.open(home) as reg, reg.store.read() as conn:
        return {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in (t.models, t.versions, t.blobs, t.version_files, t.tensors)}


def blob_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "blobs" / "sha256").rglob("*") if p.is_file())


def temp_files(home: Path) -> list[Path]:
    return sorted((home / "blobs" / "tmp").iterdir())


def assert_nothing_written(home: Path) -> None:
    assert blob_files(home) == [] and temp_files(home) == []
    assert set(counts(home).values()) == {0}


def assert_blobs_match_names(home: Path) -> None:
    """Rehash every blob at a final path: its bytes must match its name."""
    for path in blob_files(home):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == path.parent.name + path.name, f"{path} holds the wrong bytes"


# --- bad input: rejected before anything is written ------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("model", "../etc"), ("model", "a/b"), ("model", "a\x00b"), ("model", "a\\b"), ("model", "Support-Bot"),
    ("model", "m" * 64), ("version", "../v1"), ("version", "v1/x"), ("version", "v1\x00"),
    ("version", "v1\\x"), ("version", "V1.0"), ("version", "v" * 64),
])
def test_bad_names_write_nothing(reg, home, model_dir, field, value):
    model_dir.write_manifest(**{field: value})
    with pytest.raises(ManifestError, match=f"{field}: "):
        reg.push(model_dir.manifest)
    assert_nothing_written(home)


def _escape_outside(md: helpers.ModelDir) -> None:
    (md.root.parent / "outside.bin").write_bytes(b"not yours")
    md.write_manifest(weights=["../outside.bin"])


def _symlink_outside(md: helpers.ModelDir) -> None:
    (md.root.parent / "outside.bin").write_bytes(b"not yours")
    os.symlink(md.root.parent / "outside.bin", md.root / "weights" / "link.bin")


def _missing(md: helpers.ModelDir) -> None:
    md.write_manifest(weights=["weights", "more/missing.safetensors"])


def _empty_folder(md: helpers.ModelDir) -> None:
    (md.root / "empty").mkdir()
    md.write_manifest(weights=["weights", "empty"])


def _malformed(md: helpers.ModelDir) -> None:
    md.manifest.write_text("model: support-bot\nweights: [weights\n")


def _unknown_key(md: helpers.ModelDir) -> None:
    md.write_manifest(probes=[{"name": "hello", "path": "/v1/chat", "expect": {"stauts": 200}}])


def _corrupt_header(md: helpers.ModelDir) -> None:
    path = md.root / "weights" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:40])


@pytest.mark.parametrize("spoil,message", [
    (_escape_outside, r"weights\[0\]: '\.\./outside\.bin' points outside"),
    (_symlink_outside, r"weights\[0\]: weights/link\.bin is a symlink pointing outside"),
    (_missing, r"weights\[1\]: 'more/missing\.safetensors' does not exist"),
    (_empty_folder, r"weights\[1\]: folder 'empty' holds no files"),
    (_malformed, r"cellar\.yaml:\d+:\d+: malformed YAML"),
    (_unknown_key, r"cellar\.yaml: probes\.0\.expect\.stauts: unknown key"),
    (_corrupt_header, r"weights\[0\]: model\.safetensors is not a valid safetensors file"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(reg, home, model_dir, spoil, message):
    spoil(model_dir)
    with pytest.raises(ManifestError, match=message):
        reg.push(model_dir.manifest)
    assert_nothing_written(home)


def test_cli_prints_one_line_and_exits_1(sqlite_home, model_dir):
    _symlink_outside(model_dir)
    done = run_cli("push", str(model_dir.manifest))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "symlink pointing outside" in done.stderr and "Traceback" not in done.stderr
    traced = run_cli("--traceback", "push", str(model_dir.manifest))
    assert traced.returncode == 1 and "Traceback" in traced.stderr
    assert_nothing_written(sqlite_home)


def test_unreadable_weights_as_another_user(tmp_path, monkeypatch):
    """Root reads mode-000 files, so a forked child drops to nobody (uid 65534) and pushes.

    The child forks from this interpreter (no exec: nobody may not read the interpreter under
    /root), with the push path already imported.
    """
    import yaml  # noqa: F401  (imported before the fork: the child may not read site-packages)

    base = Path(os.path.realpath(tmp_path)) / "shared"
    base.mkdir()
    for folder in (base, *base.parents):  # let nobody walk down to it
        os.chmod(folder, os.stat(folder).st_mode | 0o005)
    md = helpers.ModelDir.create(base / "model")
    os.chmod(md.root / "weights" / "model.safetensors", 0o000)
    home = base / "home"
    monkeypatch.setenv("REGISTRY_HOME", str(home))
    Registry.init(home)[0].close()
    for path in (base, *base.rglob("*")):
        os.chown(path, 65534, 65534, follow_symlinks=False)
    message = _run_as_nobody(lambda: Registry.open(home).push(md.manifest))
    assert message == (f"ManifestError: {md.manifest}: weights[0]: weights/model.safetensors "
                       "is not readable; check its permissions")
    assert_nothing_written(home)


def _run_as_nobody(fn) -> str:
    """Run ``fn`` in a forked child as uid 65534; return "ErrorType: message" or "ok"."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            fn()
            out = "ok"
        except BaseException as exc:  # reported to the parent
            out = f"{type(exc).__name__}: {exc}"
        os.write(wfd, out.encode())
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


# --- kill -9 --------------------------------------------------------------------------------


def _push_env(home: Path, **extra: str) -> dict:
    return {"REGISTRY_HOME": str(home), **extra}


def assert_complete_or_absent(home: Path, ref: str) -> bool:
    """The version is either fully there (every blob verifies) or not at all; True if there."""
    assert_blobs_match_names(home)
    with Registry.open(home) as reg:  # the "next command": sweeps temps of dead pushes
        try:
            info = reg.show(ref)
        except NotFound:
            return False
        for digest in [w.digest for w in info.weights] + [p.digest for p in info.prompts]:
            reg.blobs.check(digest)
        for w in info.weights:
            assert w.tensors or not w.path.endswith(".safetensors"), "tensor index missing"
        return True


@pytest.mark.parametrize("point", ["blob:copied", "push:blobs-stored", "push:before-commit"])
def test_kill_at_crash_points(home, model_dir, point):
    done = run_cli("push", str(model_dir.manifest), env=_push_env(home, CELLAR_CRASH_AT=point))
    assert done.returncode == -9, done.stderr
    if point == "blob:copied":  # killed between copy and rename: a temp file is left behind
        assert temp_files(home)
    assert not assert_complete_or_absent(home, "support-bot@v1.0")
    assert temp_files(home) == []  # swept by Registry.open above
    assert counts(home)["versions"] == 0
    again = run_cli("push", str(model_dir.manifest), env=_push_env(home))
    assert again.returncode == 0, again.stderr
    assert assert_complete_or_absent(home, "support-bot@v1.0")


def _big_model(tmp_path: Path, mib: int) -> helpers.ModelDir:
    md = helpers.ModelDir.create(tmp_path / "big")
    rng = random.Random(7)
    with open(md.root / "weights" / "big.bin", "wb") as f:
        for _ in range(mib):
            f.write(rng.randbytes(1 << 20))
    return md


def _kill_when(proc: subprocess.Popen, ready) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            proc.kill()
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait()
    return False


def _holders(home: Path) -> set[int]:
    """Processes but this one with a file under ``home`` open (the database, a temp file)."""
    prefix, found = f"{home}/", set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:  # gone meanwhile, or not ours to see
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}").startswith(prefix):
                    found.add(int(entry))
                    break
            except OSError:
                continue
    return found


def _wait_for_writers_gone(home: Path) -> None:
    """A killed `registry` stops its command: at once in-process, within milliseconds when the
    command ran in a child of the warm process (which kills it when its client disappears).
    Until then that child may finish a blob and start the next: the writers are the processes
    named by temp files and every process with a file of the home open, not the temp files of
    one moment (between two blobs there are none)."""
    pids = {int(p.name.split("-")[1]) for p in temp_files(home)} | _holders(home)
    deadline = time.monotonic() + 5
    while any(process_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"the killed command still runs: {pids}"
        time.sleep(0.005)


def _temp_bytes(tmp: Path) -> int:
    total = 0
    for p in tmp.glob("ingest-*"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return total


def test_timed_kills_during_a_large_copy(sqlite_home, tmp_path):
    md = _big_model(tmp_path, 160)
    env = {**os.environ, **_push_env(sqlite_home)}
    present = []
    for i, at in enumerate([16 << 20, 96 << 20]):  # kill once the temp file has grown past `at`
        proc = subprocess.Popen([REGISTRY, "push", str(md.manifest), "--version", f"v{i}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tmp = sqlite_home / "blobs" / "tmp"
        killed = _kill_when(proc, lambda: _temp_bytes(tmp) > at)  # noqa: B023 (called in this iteration)
        assert killed, "the push finished before it could be killed"
        assert temp_files(sqlite_home), "expected a temp file left by the killed push"
        _wait_for_writers_gone(sqlite_home)
        present.append(assert_complete_or_absent(sqlite_home, f"support-bot@v{i}"))
        assert temp_files(sqlite_home) == []
    for delay in (0.4, 0.9):  # and at arbitrary moments
        proc = subprocess.Popen([REGISTRY, "push", str(md.manifest), "--version", f"t{delay}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        _wait_for_writers_gone(sqlite_home)
        present.append(assert_complete_or_absent(sqlite_home, f"support-bot@t{delay}"))
        assert temp_files(sqlite_home) == []
    assert present[:2] == [False, False]


# --- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs to put the registry home on."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        need("tmpfs", f"cannot mount a small tmpfs: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _init_on(mnt: Path, monkeypatch) -> Path:
    home = mnt / "home"
    monkeypatch.setenv("REGISTRY_HOME", str(home))
    reg, _ = Registry.init(home)
    reg.close()
    return home


def test_disk_full_mid_push(small_disk, tmp_path, monkeypatch):
    home = _init_on(small_disk, monkeypatch)
    md = _big_model(tmp_path, 12)
    with Registry.open(home) as reg, pytest.raises(NoSpace, match="no space left on device"):
        reg.push(md.manifest)
    assert_nothing_written(home)
    done = run_cli("push", str(md.manifest), env={"REGISTRY_HOME": str(home)})
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: no space left on device")
    assert_nothing_written(home)


def test_disk_full_when_the_database_writes(small_disk, tmp_path, monkeypatch):
    """The blobs fit but the database cannot grow: a clean NoSpace naming the database, no row."""
    home = _init_on(small_disk, monkeypatch)
    md = helpers.ModelDir.create(tmp_path / "m")
    # A large changelog entry and runtime env make the version row far larger than its blobs.
    md.write_manifest(message="x" * 9_000, runtime={"env": {f"K{i}": "v" * 100 for i in range(3000)}})
    with Registry.open(home) as reg:  # connected (WAL and shm files exist) before the disk fills
        _fill(small_disk / "filler", leave=8 * 4096)
        with pytest.raises(NoSpace, match="registry database"):
            reg.push(md.manifest)
    (small_disk / "filler").unlink()
    with Registry.open(home) as reg:
        assert reg.count_versions() == 0
    assert temp_files(home) == []


def _fill(path: Path, *, leave: int) -> None:
    """Fill the filesystem holding ``path``, then free ``leave`` bytes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(path, max(0, path.stat().st_size - leave))


def test_disk_full_before_the_database_opens(small_disk, monkeypatch):
    home = _init_on(small_disk, monkeypatch)
    for extra in home.glob("registry.db-*"):  # a cold start: SQLite must create its WAL files
        extra.unlink()
    _fill(small_disk / "filler", leave=0)
    done = run_cli("list", env={"REGISTRY_HOME": str(home)})
    assert done.returncode == 1
    assert done.stderr.startswith("error: no space left on device") and done.stderr.count("\n") == 1
