"""Small things an operator meets on a first tour (issue 27): a version flag, options that
cannot mean anything refused, the audit table's environment, the gate in `env list`, how to
check an image a push could not pin, and a --stat that leaves unchanged weights out."""

from __future__ import annotations

import numpy as np

from registry import Registry
from tests import helpers
from tests.conftest import cli


def test_version_flag():
    out = cli("--version")
    assert out.stdout.startswith("registry (Cellar) ")


def test_options_that_cannot_mean_anything_are_usage_errors(sqlite_home):
    assert "--limit" in cli("history", "--limit", "-1", code=2).stderr
    assert "--limit" in cli("audit", "--limit", "-1", code=2).stderr
    assert "above 0" in cli("watch", "--every", "0", code=2).stderr
    assert "above 0" in cli("probe", "--timeout", "-1", code=2).stderr
    assert "--keep" in cli("env", "add", "x", "--port", "18300", "--keep", "-1", code=2).stderr


def test_env_list_shows_the_gate_and_audit_shows_the_environment(sqlite_home):
    cli("env", "add", "gated", "--port", "18301", "--gate")
    assert "gate" in cli("env", "list").stdout.splitlines()[-1]
    header, row = cli("audit").stdout.splitlines()[:2]
    assert "ENV" in header.split() and "gated" in row.split()


def test_push_says_how_to_check_an_image_it_could_not_pin_and_stat_skips_unchanged_weights(sqlite_home, model_dir,
                                                                                           monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # nothing can resolve the tag
    model_dir.write_manifest(version="v1.0", image="not-built-yet:1")
    pushed = cli("push", str(model_dir.manifest))
    assert "docker image inspect not-built-yet:1" in pushed.stderr and "push again" in pushed.stderr
    for i in range(3):
        helpers.write_safetensors(model_dir.root / "weights" / f"extra{i}.safetensors",
                                  helpers.tensors(w=np.ones(4, dtype=np.float32)))
    model_dir.write_manifest(version="v1.1")
    cli("push", str(model_dir.manifest))
    model_dir.set_prompt("changed\n")
    model_dir.write_manifest(version="v1.2")
    cli("push", str(model_dir.manifest))
    stat = cli("diff", "v1.1", "v1.2", "--stat").stdout
    assert "extra0" not in stat and "weight     4 unchanged" in stat
    with Registry.open(sqlite_home) as reg:
        assert len(reg.diff("v1.1", "v1.2").weights) == 4  # --json and the API still list them all
