"""Shared fixtures: real SQLite files, a real PostgreSQL server, real git repos, real Docker.

Only the clock is mocked (``frozen_clock``). Tests that need PostgreSQL or Docker skip on a
developer machine without them, and fail under CI=true, where .ci/run starts both.

Tests are marked ``docker``, ``postgres`` or ``browser`` here, from the fixtures they use (see
``NEEDS`` and ``db_url``): ``scripts/test.sh --fast`` runs those with none of the three.

Docker: one tiny test server image for the session, free host ports, cleanup by label. The image
is Debian's static busybox plus the scripts in ``integration/server/`` (httpd with CGI health and
warm-up endpoints), loaded with ``docker import``: no registry, built in about a second, and only
when its inputs changed (the tag carries their hash).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests import helpers
from tests.second_engine import second_engine, second_engine_ssh, second_engine_tls  # noqa: F401 (fixtures, issue 22)

PG_ADMIN_URL = os.environ.get(
    "CELLAR_TEST_PG_URL", "postgresql+psycopg://cellar:cellar@127.0.0.1:5432/cellar_test"
)
IN_CI = os.environ.get("CI") == "true"

# The fixtures that need a service, and the mark each gives every test that uses it, directly or
# through another fixture. PostgreSQL through ``db_url`` is marked on its "postgresql" param.
NEEDS = {"docker_image": "docker", "docker_client": "docker", "pg_url": "postgres", "browser": "browser",
         "oci_registry": "oci", "second_engine": "docker"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark each test by the services its fixtures need, before ``-m`` selects."""
    for item in items:
        for fixture in sorted(NEEDS.keys() & set(getattr(item, "fixturenames", ()))):
            item.add_marker(NEEDS[fixture])


_RUNTIME = pytest.StashKey[str]()


def pytest_configure(config):
    _build_the_cli_once()
    _one_warm_folder(config)


def _build_the_cli_once() -> None:
    """typer turns the app into click commands on every call (30 ms, 600 times a run); the warm
    process builds them once (``cli/warm.py``), and so does each test process."""
    import typer.main
    import typer.testing

    build, built = typer.main.get_command, {}

    def get_command(typer_instance):
        import cli.main

        if typer_instance is not cli.main.app:
            return build(typer_instance)
        if "app" not in built:
            built["app"] = build(typer_instance)
        return built["app"]

    typer.main.get_command = typer.testing._get_command = get_command


def _one_warm_folder(config) -> None:
    """One folder of warm processes for the run (``cli/launch.py``), so a test's ``registry``
    subprocess forks from a process that imported everything once instead of importing it all
    again (0.5 s of CPU each): set up by the controller, inherited by the xdist workers."""
    if hasattr(config, "workerinput") or os.environ.get("CELLAR_TEST_RUNTIME"):
        return
    import tempfile

    folder = tempfile.mkdtemp(prefix="cellar-run-", dir="/tmp")  # short: a socket path has 107 bytes
    os.environ["XDG_RUNTIME_DIR"] = os.environ["CELLAR_TEST_RUNTIME"] = folder
    config.stash[_RUNTIME] = folder
    # started now, so the first tests' commands find it ready rather than each importing it all
    registry = Path(sys.executable).with_name("registry")
    if registry.exists():
        subprocess.run([registry, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def pytest_collection_finish(session):
    """What collection built (modules, 2,000 test items) lives to the end: out of the cyclic
    collector's way, which otherwise walks it again and again."""
    import gc

    gc.collect()
    gc.freeze()


def pytest_unconfigure(config):
    """End the run's warm processes (found by their socket's folder, this run's alone)."""
    folder = config.stash.get(_RUNTIME, None)
    if folder is None:
        return
    import shutil
    import signal

    marker = f"\0{folder}/".encode()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:  # gone meanwhile
            continue
        if b"from cli.warm import serve" in cmdline and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def need(what: str, reason: str):
    """Skip locally, fail in CI: CI must run every test."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's registry, actor or git identity."""
    for var in ("REGISTRY_HOME", "REGISTRY_DB_URL", "REGISTRY_ACTOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("REGISTRY_ACTOR", "tester")


@pytest.fixture
def frozen_clock(monkeypatch):
    """A clock the test moves by hand: ``frozen_clock.tick(seconds)``."""

    class Clock:
        at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

        def now(self):
            return self.at

        def tick(self, seconds: float = 1):
            self.at += timedelta(seconds=seconds)

    clock = Clock()
    monkeypatch.setattr("registry.clock.now", clock.now)
    return clock


def _pg_database():
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cellar_t_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server down, driver missing, bad credentials
        admin.dispose()
        need("PostgreSQL", f"{PG_ADMIN_URL}: {str(exc).splitlines()[0]} (run scripts/setup-postgres.sh)")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    return admin, name, url


@contextlib.contextmanager
def database_like(kind: str, sqlite_file: Path):
    """A new, empty database of ``kind`` (a URL or "sqlite"/"postgresql"): the SQLite file
    ``sqlite_file``, or a new PostgreSQL database, dropped afterwards."""
    if kind.startswith("sqlite"):
        yield f"sqlite:///{sqlite_file}"
        return
    from sqlalchemy import text

    admin, name, url = _pg_database()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    with database_like(request.param, tmp_path / "registry.db") as url:
        yield url


@pytest.fixture
def pg_url(tmp_path):
    """A new, empty PostgreSQL database, whatever ``db_url`` the test has (for PostgreSQL-only tests)."""
    with database_like("postgresql", tmp_path / "unused.db") as url:
        yield url


@pytest.fixture
def other_url(tmp_path, db_url):
    """A second new, empty database of the same kind as ``db_url`` (another site's, for transfers)."""
    with database_like(db_url, tmp_path / "other.db") as url:
        yield url


@pytest.fixture
def target(tmp_path, db_url):
    """Where to restore: a new home, and a new, empty database of the same kind as ``db_url``."""
    path = tmp_path / "restored"
    with database_like(db_url, path / "registry.db") as url:
        yield path, url


# --- homes: `registry init`, its SQLite migrations replayed ----------------------------------

_SQLITE_HEAD: list[str] = []  # this worker's dump of a SQLite database the real migrations made


def _sqlite_head(migrate_upgrade) -> list[str]:
    """The statements that rebuild what ``migrate.upgrade`` makes of an empty SQLite database
    (tables, indexes, the rows migrations insert, alembic_version): dumped once per worker from
    a database the real migrations made, in the same session, from the same code."""
    if not _SQLITE_HEAD:
        import sqlite3
        import tempfile

        from registry.store.sql import Store

        with tempfile.TemporaryDirectory(prefix="cellar-schema-") as folder:
            store = Store(f"sqlite:///{folder}/head.db")
            try:
                migrate_upgrade(store)
            finally:
                store.close()
            db = sqlite3.connect(f"{folder}/head.db")
            try:
                _SQLITE_HEAD.extend(line for line in db.iterdump() if line not in ("BEGIN TRANSACTION;", "COMMIT;"))
            finally:
                db.close()
    return _SQLITE_HEAD


@contextlib.contextmanager
def _migrations_replayed():
    """While inside, an empty SQLite database is brought to the head schema by replaying
    ``_sqlite_head()`` in the same serialised write transaction ``migrate.upgrade`` uses, instead
    of running the ten migrations through Alembic (75 ms of CPU per home, 400 homes in the fast
    tier). Anything else (PostgreSQL, a database with a schema, a revision other than head) runs
    the real migrations; so does every ``registry init`` a test runs itself, and every subprocess.
    The migrations themselves are tested in tests/integration/test_schema.py."""
    from registry.store.sql import migrate

    real = migrate.upgrade

    def upgrade(store, revision: str = "head") -> None:
        if revision != "head" or store.dialect != "sqlite" or store.schema_revision() is not None:
            return real(store, revision)
        statements = _sqlite_head(real)
        with store.schema_change() as conn:
            if conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar():
                raise RuntimeError("not an empty database")  # never here: homes are new
            for statement in statements:
                conn.exec_driver_sql(statement)

    migrate.upgrade = upgrade
    try:
        yield
    finally:
        migrate.upgrade = real


def init_home(path: Path):
    """``Registry.init(path)`` (closed), with the SQLite migrations replayed (``_migrations_replayed``)."""
    from registry.api import Registry

    with _migrations_replayed():
        reg, _ = Registry.init(path)
    reg.close()


@pytest.fixture
def home(tmp_path, db_url, monkeypatch) -> Path:
    """An initialised registry home on the parametrised database; REGISTRY_HOME points at it."""
    path = tmp_path / "home"
    monkeypatch.setenv("REGISTRY_HOME", str(path))
    monkeypatch.setenv("REGISTRY_DB_URL", db_url)
    init_home(path)
    return path


@pytest.fixture
def reg(home):
    from registry.api import Registry

    with Registry.open(home) as r:
        yield r


@pytest.fixture
def sqlite_home(tmp_path, monkeypatch) -> Path:
    """An initialised registry on SQLite only (for tests that are about files, not databases)."""
    path = tmp_path / "home"
    monkeypatch.setenv("REGISTRY_HOME", str(path))
    init_home(path)
    return path


@pytest.fixture
def store(tmp_path):
    """An empty blob store (files only, no database)."""
    from registry.store.files.blobs import BlobStore

    s = BlobStore(tmp_path / "blobs")
    s.create()
    return s


@pytest.fixture
def model_dir(tmp_path) -> helpers.ModelDir:
    """A folder with a safetensors file, a prompt and a cellar.yaml, ready to push."""
    return helpers.ModelDir.create(tmp_path / "model")


@pytest.fixture
def git_repo(tmp_path):
    """A real git repository with an identity, for provenance tests."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    return repo


def sql(reg, *statements: str, **params) -> None:
    """Run raw SQL statements against ``reg``'s database in one transaction (to tamper, to break)."""
    from sqlalchemy import text

    with reg.store.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


# --- the CLI, in-process ----------------------------------------------------------------------


def cli(*args: str, code: int = 0, env: dict | None = None):
    """``registry ARGS`` through typer's CliRunner; fails unless it exits with ``code``."""
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def as_json(*args: str, code: int = 0):
    """``registry ARGS --json``, parsed."""
    return json.loads(cli(*args, "--json", code=code).stdout)


# --- the in-library fake engine ---------------------------------------------------------------

IMAGE = "example:latest"
IMAGE_ID = "sha256:" + "ab" * 32
FAKE_TOKEN = "canary-s3cr3t-value"  # the fake fixture's SUPPORT_API_TOKEN


@pytest.fixture
def fake(monkeypatch):
    """The in-library fake engine standing in for Docker, with ``IMAGE`` pulled (as ``IMAGE_ID``)
    and SUPPORT_API_TOKEN set to ``FAKE_TOKEN``."""
    from registry.engines.fake import FakeEngine

    monkeypatch.setenv("SUPPORT_API_TOKEN", FAKE_TOKEN)
    return FakeEngine(images={IMAGE: IMAGE_ID})


def on_fake(home: Path, fake):
    """The registry at ``home`` whose engine (push pins images through it too) and HTTP checks are ``fake``."""
    from registry.api import Registry

    return Registry.open(home, engine_factory=lambda host: fake, checks=fake.checks)


def push_versions(reg, model_dir: helpers.ModelDir, *versions: str, prompt: str = "prompt {version}\n",
                  **manifest) -> None:
    """Push each version of ``model_dir``, with a prompt of its own and ``manifest``'s fields."""
    for version in versions:
        model_dir.set_prompt(prompt.format(version=version))
        model_dir.write_manifest(version=version, **manifest)
        reg.push(model_dir.manifest)


# --- an OCI registry (Distribution 2.8) ---------------------------------------------------------


@pytest.fixture
def oci_registry(tmp_path, monkeypatch):
    """A real registry on a free loopback port, plain HTTP, no auth (tests.oci starts variants);
    no test reads the developer's Docker credentials."""
    import shutil

    from tests.oci import OciRegistry

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    if shutil.which("docker-registry") is None:
        need("docker-registry", "run scripts/setup-oci-registry.sh")
    registry = OciRegistry(tmp_path / "oci").start()
    yield registry
    registry.stop()


# --- Docker -----------------------------------------------------------------------------------

SERVER = Path(__file__).parent / "integration" / "server"
BUSYBOX = Path("/bin/busybox")
# sha256sum, stat and rm: a host's blob cache is checked and collected with the image's own tools (issue 22)
APPLETS = ["sh", "httpd", "sleep", "cat", "wc", "echo", "printf", "sha256sum", "stat", "rm"]


def _docker_client():
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # no daemon, no permission, no socket
        need("Docker", f"{os.environ.get('DOCKER_HOST') or 'local socket'}: {str(exc).splitlines()[0]}")
    return client


@pytest.fixture
def docker_client():
    """A client of the local Docker engine, closed after the test."""
    client = _docker_client()
    yield client
    client.close()


def _inputs_hash() -> str:
    h = hashlib.sha256(BUSYBOX.read_bytes() + " ".join(APPLETS).encode())
    for path in sorted(SERVER.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(SERVER).as_posix().encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes | None = None, mode: int = 0o755, link: str | None = None):
            info = tarfile.TarInfo(name)
            info.mode = mode
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for folder in ("bin", "tmp", "model", "www", "www/cgi-bin"):
            add(folder, mode=0o1777 if folder == "tmp" else 0o755)
        add("bin/busybox", BUSYBOX.read_bytes())
        for applet in APPLETS:
            add(f"bin/{applet}", link="busybox")
        for path in sorted(SERVER.rglob("*")):
            if path.is_file():
                add(path.relative_to(SERVER).as_posix(), path.read_bytes())
    return buf.getvalue()


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The test server image's tag, built once per input hash."""
    client = _docker_client()
    if not BUSYBOX.is_file():
        need("busybox", f"{BUSYBOX} (apt-get install busybox-static)")
    tag = f"cellar-test-server:{_inputs_hash()}"
    if not client.images.list(name=tag):
        repo, _, version = tag.partition(":")
        client.api.import_image_from_data(_rootfs(), repository=repo, tag=version,
                                          changes=['ENTRYPOINT ["/serve"]', "ENV PATH=/bin"])
    client.close()
    return tag


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def docker_env(docker_image, sqlite_home, monkeypatch, model_dir):
    """A registry on SQLite with environment ``t<random>`` (default, on a free port) and versions:
    v1.0 and v1.1 good (different prompts), v1.2 unhealthy (503), v1.3 exits at once,
    v1.4 and v1.5 good but slow to come up (1 s). Every container of the env is removed after."""
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", "canary-" + os.urandom(6).hex())
    name = "t" + os.urandom(4).hex()
    specs = {"v1.0": {}, "v1.1": {}, "v1.2": {"MAX_TOKENS": "lots"}, "v1.3": {"EXIT_AT_ONCE": "3"},
             "v1.4": {"READY_DELAY": "1"}, "v1.5": {"READY_DELAY": "1"}}
    reg = Registry.open(sqlite_home)
    for version, env in specs.items():
        model_dir.set_prompt(f"prompt-{version}")
        model_dir.write_manifest(version=version, image=docker_image, runtime={
            "port": 8080, "env": {"MAX_TOKENS": "64", **env}, "secrets": ["SUPPORT_API_TOKEN"],
            "health": {"path": "/cgi-bin/health", "timeout_s": 2},
            "warmup": [{"method": "POST", "path": "/cgi-bin/warm", "json": {"prompt": "hi"}}]})
        reg.push(model_dir.manifest)
    reg.add_env(name, port=free_port(), health_timeout_s=2.5, default=True)
    yield reg, name
    own = reg.cfg.registry_id  # this registry's containers only, whatever else runs on the host
    reg.close()
    client = _docker_client()
    for c in client.containers.list(all=True, filters={"label": [f"cellar.env={name}", f"cellar.registry={own}"]}):
        c.remove(force=True)
    client.close()
