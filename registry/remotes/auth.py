"""Credentials for a registry host, read when a command needs them and never stored by Cellar.

In order: ``$REGISTRY_REMOTE_USERNAME`` with ``$REGISTRY_REMOTE_PASSWORD`` (CI), then the Docker
credentials file (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``): its
``credHelpers`` or ``credsStore`` helper, else its ``auths`` entry, as ``docker login`` wrote it.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from registry.errors import InvalidInput

USER_VAR, PASSWORD_VAR = "REGISTRY_REMOTE_USERNAME", "REGISTRY_REMOTE_PASSWORD"
HELPER_TIMEOUT_S = 30


def credentials(host: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(username, password) for ``host`` (``HOST[:PORT]``), or None to go anonymous."""
    user, password = environ.get(USER_VAR), environ.get(PASSWORD_VAR)
    if user and password:
        return user, password
    if user or password:
        raise InvalidInput(f"set both {USER_VAR} and {PASSWORD_VAR}, or neither")
    config = _docker_config(environ)
    helper = (config.get("credHelpers") or {}).get(host) or config.get("credsStore")
    if helper:
        return _from_helper(helper, host)
    auths = config.get("auths") or {}
    entry = next((auths[k] for k in (host, f"https://{host}", f"http://{host}") if k in auths), None)
    return _from_entry(entry, host) if entry else None


def _docker_config(environ: Mapping[str, str]) -> dict:
    folder = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else Path.home() / ".docker"
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the Docker credentials file {folder / 'config.json'}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _from_entry(entry: dict, host: str) -> tuple[str, str] | None:
    if entry.get("username") and entry.get("password"):
        return str(entry["username"]), str(entry["password"])
    if not entry.get("auth"):
        return None
    try:
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    except ValueError:
        raise InvalidInput(f"the Docker credentials for {host} are not valid base64: run `docker login {host}` "
                           "again") from None
    return user, password


def _from_helper(helper: str, host: str) -> tuple[str, str] | None:
    try:
        out = subprocess.run([f"docker-credential-{helper}", "get"], input=host, capture_output=True, text=True,
                             timeout=HELPER_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidInput(f"docker-credential-{helper} failed for {host}: {exc}") from None
    if out.returncode != 0:
        return None  # the helper has nothing for this host
    try:
        got = json.loads(out.stdout)
        return str(got["Username"]), str(got["Secret"])
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(f"docker-credential-{helper} answered something other than credentials for "
                           f"{host}") from None
