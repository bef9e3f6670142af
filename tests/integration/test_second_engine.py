"""The second engine is what the issue 22 tests need it to be: it cannot see this machine's
registry folders, its containers publish on its own address, and TLS admits only a client
whose certificate the test's CA signed."""

from __future__ import annotations

import time
import urllib.request

import docker
import pytest
import requests
from docker.types import Mount

from tests.conftest import free_port


def test_the_registry_folders_do_not_exist_there(second_engine, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"w")
    client = second_engine.client()
    try:
        with pytest.raises(docker.errors.APIError, match="bind source path does not exist"):
            client.containers.create(second_engine.image, mounts=[
                Mount("/model", str(tmp_path), type="bind", read_only=True)])
    finally:
        client.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_its_containers_publish_on_its_address(second_engine):
    client, port = second_engine.client(), free_port()
    c = client.containers.run(second_engine.image, detach=True, init=True, ports={"8080/tcp": ("0.0.0.0", port)},
                              environment={"MAX_TOKENS": "64"}, labels={"cellar.registry": "harness-test"})
    try:
        deadline = time.monotonic() + 20
        while not _answers(f"http://{second_engine.address}:{port}/cgi-bin/health"):
            assert time.monotonic() < deadline, "the container did not answer on the engine's address"
            time.sleep(0.1)
        assert not _answers(f"http://127.0.0.1:{port}/cgi-bin/health")
    finally:
        c.remove(force=True)
        client.close()


def test_tls_admits_only_a_client_with_a_certificate(second_engine_tls):
    client = second_engine_tls.client()
    try:
        assert client.ping()
        assert client.images.list(name=second_engine_tls.image)
    finally:
        client.close()
    with pytest.raises(requests.exceptions.SSLError):  # the TLS front hangs up on it
        second_engine_tls.client(client_cert=False)
