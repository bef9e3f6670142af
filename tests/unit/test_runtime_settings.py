"""A manifest's runtime settings for the container's host (issue 24): spelling, one-line errors
naming the field, digests of versions that set none unchanged, environment overrides, GPU claims."""

from __future__ import annotations

import pytest

from registry.deploy import hosting
from registry.errors import Conflict, InvalidInput, ManifestError
from registry.models import Environment, Runtime
from registry.models.resources import EnvRuntime, env_runtime, gpu_claim, gpu_overlap, runtime_overrides
from registry.versions import manifest as manifest_mod

BASE = {"model": "bot", "version": "v1", "image": "example/server:1"}


def runtime(**fields) -> Runtime:
    return manifest_mod.validate({**BASE, "runtime": fields}, source="cellar.yaml").runtime


def test_settings_are_read_in_dockers_spelling():
    r = runtime(gpus="1, 0", shm_size="16G", memory="64g", ipc="host", cpus=8,
                ulimits={"memlock": -1, "stack": 67108864}, log={"max_size": "50m"}, restart="on-failure:3")
    assert r.gpus == ["0", "1"] and r.shm_size == "16g" and r.memory == "64g" and r.ipc == "host"
    assert r.log.driver == "json-file" and r.log.max_file == 5
    assert runtime(gpus=2).gpus == 2 and runtime(gpus="ALL").gpus == "all"
    assert runtime(gpus=["GPU-8f6a1b", 1]).gpus == ["1", "GPU-8f6a1b"]


@pytest.mark.parametrize(("fields", "named"), [
    ({"gpus": 0}, "runtime.gpus: 0 GPUs"),
    ({"gpus": "a b"}, "runtime.gpus: 'a b' is not a GPU index"),
    ({"gpus": True}, "runtime.gpus: write all"),
    ({"shm_size": "lots"}, "runtime.shm_size: 'lots' is not a size"),
    ({"memory": "1.5g"}, "runtime.memory: '1.5g' is not a size"),
    ({"ipc": "shared"}, "runtime.ipc: 'shared' is not an IPC mode"),
    ({"cpus": 0}, "runtime.cpus: Input should be greater than 0"),
    ({"ulimits": {"memlok": -1}}, "runtime.ulimits: 'memlok' is not a ulimit"),
    ({"ulimits": {"nofile": -2}}, "runtime.ulimits: nofile: -2 is not a limit"),
    ({"log": {"driver": "syslog"}}, "runtime.log.driver: 'syslog' is not a log driver"),
    ({"log": {"max_files": 3}}, "runtime.log.max_files: unknown key"),
    ({"restart": "sometimes"}, "runtime.restart: 'sometimes' is not a restart policy"),
    ({"gpu": 1}, "runtime.gpu: unknown key"),
    ({"warmup_timeout_s": -1}, "runtime.warmup_timeout_s: Input should be greater than 0"),
])
def test_a_bad_value_is_a_one_line_error_naming_the_field(fields, named):
    with pytest.raises(ManifestError) as err:
        runtime(**fields)
    assert str(err.value).startswith(f"cellar.yaml: {named}") and "\n" not in str(err.value)


def test_a_runtime_without_the_settings_records_what_it_recorded_before():
    dumped = runtime(port=8080, env={"A": "1"}).model_dump(mode="json", by_alias=True)
    assert dumped == {"port": 8080, "env": {"A": "1"}, "secrets": [], "command": None,
                      "health": {"path": "/health", "timeout_s": 30.0}, "warmup": []}
    assert runtime(memory="1g").model_dump(mode="json")["memory"] == "1g"
    assert Runtime.model_validate(dumped) == Runtime.model_validate(dumped)  # old records still load


def env(name="prod", runtime=None, host=None) -> Environment:
    from datetime import UTC, datetime

    return Environment(name=name, port=1, created_at=datetime.now(UTC), docker_host=host,
                       runtime=EnvRuntime.model_validate(runtime) if runtime else None)


def test_environment_overrides_win_and_defaults_fill_the_rest():
    res = hosting.effective(runtime(memory="8g", shm_size="1g", gpus=1), env(runtime={"memory": "16g"}))
    assert (res.memory, res.shm_size, res.gpus) == ("16g", "1g", 1)
    host = hosting.host_settings(res)
    assert host.restart == "unless-stopped" and host.log_options == {"max-size": "20m", "max-file": "5"}
    assert host.ipc is None  # Docker's own: a private IPC namespace


def test_shared_memory_larger_than_the_memory_limit_is_refused():
    with pytest.raises(Conflict, match="runtime.shm_size 2g is larger than runtime.memory 1g"):
        hosting.check_sizes(runtime(memory="1g", shm_size="2g"))


def test_runtime_flags_parse_and_name_the_bad_one():
    assert runtime_overrides(["gpus=0,1", "memory=16g", "ulimits={memlock: -1}", "shm-size=", "cpus=2.5"]) == {
        "gpus": "0,1", "memory": "16g", "ulimits": {"memlock": -1}, "shm_size": None, "cpus": 2.5}
    with pytest.raises(InvalidInput, match="KEY one of gpus"):
        runtime_overrides(["port=1"])
    with pytest.raises(InvalidInput, match=r"^--runtime memory: 'huge' is not a size"):
        env_runtime(None, runtime_overrides(["memory=huge"]))
    merged = env_runtime(EnvRuntime(memory="1g", gpus=[0]), {"memory": None}, share_gpus=True)
    assert merged is not None and merged.model_dump() == {"gpus": ["0"], "share_gpus": True}
    assert env_runtime(EnvRuntime(memory="1g"), {"memory": None}) is None


@pytest.mark.parametrize(("a", "b", "shared"), [
    (1, ["0"], {"0"}), (2, ["1", "2"], {"1"}), ("all", ["3"], {"3"}), ("all", "all", {"*"}),
    (["0"], ["1"], set()), (None, "all", set()), (["GPU-a"], ["GPU-b"], set()),
])
def test_gpu_claims_overlap(a, b, shared):
    assert gpu_overlap(gpu_claim(a), gpu_claim(b)) == shared


def test_a_gpu_collision_names_both_environments_unless_both_share():
    holder = hosting.GpuHolder(env=env("staging"), ref="bot@v1", gpus=[0])
    with pytest.raises(Conflict) as err:
        hosting.check_gpu_collision(env("prod"), runtime(gpus="all"), "bot@v2", [holder])
    assert "bot@v2 in prod would use GPU 0, which bot@v1 in staging holds" in str(err.value)
    both = hosting.GpuHolder(env=env("staging", runtime={"share_gpus": True}), ref="bot@v1", gpus=[0])
    hosting.check_gpu_collision(env("prod", runtime={"share_gpus": True}), runtime(gpus="all"), "bot@v2", [both])
    with pytest.raises(Conflict):  # one side alone allowing it is not enough
        hosting.check_gpu_collision(env("prod", runtime={"share_gpus": True}), runtime(gpus=1), "bot@v2", [holder])
