"""registry/web uses only the public ``registry`` API and its own modules: no store, no SQL."""

from __future__ import annotations

from tests.test_architecture import REGISTRY, _imports


def test_the_web_package_imports_only_the_public_registry_api():
    web = {name: path for name, path in REGISTRY.items() if name.startswith("registry.web")}
    assert "registry.web.app" in web
    private = sorted({f"{name}: {i}" for name, path in web.items() for i in _imports(path, name)
                      if (i in REGISTRY and i != "registry" and not i.startswith("registry.web"))
                      or i.startswith("sqlalchemy")})
    assert private == []
