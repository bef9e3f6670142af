"""The ports deploys talk through, with their adapters: ``engine.Engine`` (containers) with
``docker.DockerEngine`` (docker-py) and ``fake.FakeEngine`` (in memory, for tests and scripts),
and ``http.Checks`` (health waits, warm-up requests) with ``http.HttpChecks``."""
