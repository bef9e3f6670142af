"""Docker fixtures: one tiny test server image for the session, free host ports, cleanup by label.

The image is Debian's static busybox plus the scripts in ``server/`` (httpd with CGI health
and warm-up endpoints), loaded with ``docker import``: no registry, built in about a second,
and only when its inputs changed (the tag carries their hash).
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest

from tests.conftest import need

SERVER = Path(__file__).parent / "server"
BUSYBOX = Path("/bin/busybox")
APPLETS = ["sh", "httpd", "sleep", "cat", "wc", "echo", "printf"]


def _docker_client():
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # no daemon, no permission, no socket
        need("Docker", f"{os.environ.get('DOCKER_HOST') or 'local socket'}: {str(exc).splitlines()[0]}")
    return client


def _inputs_hash() -> str:
    h = hashlib.sha256(BUSYBOX.read_bytes())
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
    for i, (version, env) in enumerate(specs.items()):
        model_dir.set_prompt(f"prompt-{version}")
        model_dir.write_manifest(version=version, image=docker_image, runtime={
            "port": 8080, "env": {"MAX_TOKENS": "64", **env}, "secrets": ["SUPPORT_API_TOKEN"],
            "health": {"path": "/cgi-bin/health", "timeout_s": 2},
            "warmup": [{"method": "POST", "path": "/cgi-bin/warm", "json": {"prompt": "hi"}}]})
        reg.push(model_dir.manifest)
    reg.add_env(name, port=free_port(), health_timeout_s=2.5, default=True)
    yield reg, name
    own = reg.config.registry_id  # this registry's containers only, whatever else runs on the host
    reg.close()
    client = _docker_client()
    for c in client.containers.list(all=True, filters={"label": [f"cellar.env={name}", f"cellar.registry={own}"]}):
        c.remove(force=True)
    client.close()


