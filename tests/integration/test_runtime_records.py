"""Runtime settings as records (issue 24), on SQLite and PostgreSQL: part of the version (digest,
diff), environment overrides sealed and audited, set from the CLI with one-line errors."""

from __future__ import annotations

from registry.api import Registry
from tests.conftest import as_json, cli


def test_runtime_settings_are_part_of_the_version_and_diff_shows_them(reg, model_dir):
    model_dir.write_manifest(version="v1")
    first = reg.push(model_dir.manifest)
    model_dir.write_manifest(version="v1")
    assert reg.push(model_dir.manifest).manifest_digest == first.manifest_digest  # same content, same digest
    model_dir.write_manifest(version="v2", runtime={"port": 8080, "gpus": "all", "shm_size": "16g",
                                                    "ulimits": {"memlock": -1}})
    reg.push(model_dir.manifest)
    changes = {s.field: (s.old, s.new) for s in reg.diff("support-bot@v1", "support-bot@v2").runtime.settings}
    assert changes["gpus"] == (None, "all") and changes["shm_size"] == (None, "16g")
    assert changes["ulimits"] == (None, {"memlock": -1})
    assert reg.show("support-bot@v2").runtime.gpus == "all"


def test_environment_overrides_are_sealed_audited_and_cleared(home):
    with Registry.open(home) as reg:
        reg.add_env("gpu-box", port=18080, runtime={"gpus": [1], "memory": "16g"}, share_gpus=True)
        reg.set_env("gpu-box", runtime={"memory": None, "shm_size": "8g"})
        env = reg.environment("gpu-box")
        assert env.runtime.model_dump() == {"gpus": ["1"], "shm_size": "8g", "share_gpus": True}
        assert reg.verify_audit().ok
        last = reg.audit(action="env-set")[-1]
        assert last.detail["runtime"] == {"gpus": ["1"], "shm_size": "8g", "share_gpus": True}
        reg.set_env("gpu-box", runtime={"gpus": None, "shm_size": None}, share_gpus=False)
        assert reg.environment("gpu-box").runtime is None
        assert reg.verify_audit().ok


def test_env_add_and_set_from_the_cli(home):
    cli("env", "add", "prod", "--port", "18081", "--runtime", "gpus=0,1", "--runtime", "ipc=host")
    shown = as_json("env", "set", "prod", "--runtime", "gpus=", "--runtime", "memory=32g",
                    "--share-gpus")["environment"]
    assert shown["runtime"] == {"ipc": "host", "memory": "32g", "share_gpus": True}
    bad = cli("env", "set", "prod", "--runtime", "memory=lots", code=1)
    assert bad.stderr.strip() == "error: --runtime memory: 'lots' is not a size: write a whole number with b, k, m " \
                                 "or g, e.g. 256m or 16g"
    cli("env", "set", "prod", "--runtime", "gpu=1", code=1)
    assert as_json("env", "show", "prod")["runtime"]["memory"] == "32g"
