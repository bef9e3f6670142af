"""Fixtures for a second Docker engine that shares no disk with the registry (issue 22).

``scripts/second-engine.sh start`` runs it in network and mount namespaces of its own: the
registry homes' folders (``/tmp`` among them, where pytest puts ``tmp_path``) do not exist there,
and its containers publish on its own address. ``second_engine`` starts it (idempotent) and moves
the test server image to it with ``docker save | docker load`` (there is no image registry);
``second_engine_tls`` puts a TLS front with certificates made here (openssl) before it.
Under CI=true a missing engine fails instead of skipping (``need``).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "second-engine.sh"
NETNS = "/run/netns/cellar-e2"
SOCKET = "/run/cellar-engine2/docker.sock"
SOCKET_URL = "unix://" + SOCKET
TLS_PORT = 2376


@dataclass
class SecondEngine:
    url: str                 # the DOCKER_HOST to use, e.g. tcp://10.231.0.2:2375
    image: str               # the test server image, loaded there
    cert_path: str | None = None  # DOCKER_CERT_PATH for a TLS url (ca.pem, cert.pem, key.pem)

    @property
    def address(self) -> str:
        return self.url.rsplit("//", 1)[-1].rsplit(":", 1)[0]

    def client(self, *, client_cert: bool = True):
        """A docker-py client of this engine (over TLS when ``cert_path`` is set; with the client
        certificate unless ``client_cert`` is False)."""
        import docker
        from docker.tls import TLSConfig

        tls = None
        if self.cert_path:
            c = Path(self.cert_path)
            tls = TLSConfig(client_cert=(str(c / "cert.pem"), str(c / "key.pem")) if client_cert else None,
                            ca_cert=str(c / "ca.pem"), verify=True)
        # $REQUESTS_CA_BUNDLE would replace the CA given (requests' rule): no trust_env, so the
        # API version is asked for after the client is made
        client = docker.DockerClient(base_url=self.url, tls=tls, timeout=60, version="1.24")
        client.api.trust_env = False
        client.api._version = client.api.version(api_version=False)["ApiVersion"]
        return client

    def cleanup(self, registry_id: str) -> None:
        """Remove the containers and volumes a registry made there (found by its label)."""
        client = self.client()
        try:
            label = {"label": f"cellar.registry={registry_id}"}
            for c in client.containers.list(all=True, filters=label):
                c.remove(force=True)
            for v in client.volumes.list(filters=label):
                v.remove(force=True)
        finally:
            client.close()


def _start() -> str:
    from tests.conftest import need

    if os.geteuid() != 0:
        need("second Docker engine", "scripts/second-engine.sh needs root")
    done = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        need("second Docker engine", done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "start failed")
    return done.stdout.strip().splitlines()[-1]


def _load_image(url: str, image: str) -> None:
    """``docker save | docker load``: the second engine has no registry to pull from."""
    import docker

    here, there = docker.from_env(timeout=120), docker.DockerClient(base_url=url, timeout=120)
    try:
        if not there.images.list(name=image):
            there.images.load(b"".join(here.images.get(image).save(named=True)))
    finally:
        here.close()
        there.close()


@pytest.fixture(scope="session")
def second_engine(docker_image) -> SecondEngine:
    """The second engine over plain ``tcp://``, with the test server image loaded."""
    url = _start()
    _load_image(url, docker_image)
    return SecondEngine(url=url, image=docker_image)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(folder: Path, address: str) -> Path:
    """A CA, a server certificate for ``address`` and a client certificate, as Docker names them."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=cellar-test-ca",
             "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=folder)
    (folder / "server.ext").write_text(f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who, key, cert in (("server", "server-key.pem", "server-cert.pem"), ("client", "key.pem", "cert.pem")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", key,
                 "-out", f"{who}.csr", cwd=folder)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{who}.ext", "-out", cert, cwd=folder)
    return folder


@pytest.fixture(scope="session")
def second_engine_tls(second_engine, tmp_path_factory):
    """The second engine over ``tcp://`` with TLS (client certificate verified), certificates
    made here; the TLS front runs in the engine's network namespace, on its address."""
    certs = make_certs(tmp_path_factory.mktemp("engine2-certs"), second_engine.address)
    # One front per pytest-xdist worker (this fixture is per session, a session per worker): a
    # port of its own each, or the second worker's front finds the port taken.
    port = TLS_PORT + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    proxy = subprocess.Popen(
        ["nsenter", f"--net={NETNS}", sys.executable, str(ROOT / "tests" / "tls_proxy.py"),
         second_engine.address, str(port), SOCKET, str(certs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None
        ready, _, _ = select.select([proxy.stdout], [], [], 20)  # "ready", or EOF when it failed
        assert ready and proxy.stdout.readline().strip() == "ready", "the TLS front did not start"
        yield SecondEngine(url=f"tcp://{second_engine.address}:{port}", image=second_engine.image,
                           cert_path=str(certs))
    finally:
        proxy.kill()
        proxy.wait(timeout=10)


@dataclass
class SshHost:
    url: str        # ssh://root@ADDRESS:PORT
    bin_dir: str    # put first on PATH: its `ssh` uses this test's config, key and known_hosts
    config: str     # the ssh_config it uses


@pytest.fixture(scope="session")
def second_engine_ssh(second_engine, tmp_path_factory):
    """The second engine behind a real sshd (Debian's openssh-server) in its network namespace, as
    ``ssh://root@ADDRESS:PORT``. The key pair and host key are made here; the client side is the
    system ``ssh`` with this test's config (a wrapper first on PATH), known_hosts strictly checked.
    On that side ``docker system dial-stdio`` reaches the second engine (DOCKER_HOST set by sshd)."""
    import shutil

    from tests.conftest import need

    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists() or not shutil.which("ssh"):
        need("sshd", "apt-get install openssh-server openssh-client (scripts/second-engine.sh does)")
    folder = tmp_path_factory.mktemp("engine2-ssh")
    for key in ("host_key", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True,
                       timeout=30)
    port = 2222 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    address = second_engine.address
    (folder / "authorized_keys").write_text((folder / "id_ed25519.pub").read_text())
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"SetEnv DOCKER_HOST={SOCKET_URL}\n")
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[{address}]:{port} {host_key[0]} {host_key[1]}\n")
    (folder / "ssh_config").write_text(
        f"Host {address}\n  IdentityFile {folder / 'id_ed25519'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {folder / 'known_hosts'}\n  StrictHostKeyChecking yes\n  BatchMode yes\n")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {folder / 'ssh_config'} \"$@\"\n")
    (bin_dir / "ssh").chmod(0o755)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = (folder / "sshd.log").open("w")
    server = subprocess.Popen(["nsenter", f"--net={NETNS}", sshd, "-D", "-e", "-f", str(folder / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=log)
    try:
        url = f"ssh://root@{address}:{port}"
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        for _ in range(50):  # until sshd answers (5 s at most)
            if subprocess.run(["ssh", "-p", str(port), f"root@{address}", "true"], env=env, timeout=10,
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"sshd did not start: {(folder / 'sshd.log').read_text()}")
        yield SshHost(url=url, bin_dir=str(bin_dir), config=str(folder / "ssh_config"))
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
