"""The Docker fixtures and the test server image live in tests/conftest.py, where tests/cli sees
them too; bench/probe.py still builds the image through these names."""

from tests.conftest import _inputs_hash, _rootfs, free_port  # noqa: F401
