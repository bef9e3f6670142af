"""Names and versions: a strict pattern, never a path."""

from __future__ import annotations

import pytest

from registry.models import check_name, check_version

BAD = [
    "", "../etc", "..", "a/../b", "a/b", "/abs", "a\\b", "a\x00b", "Support-Bot", "MODEL",
    "a" * 64, "-lead", ".hidden", "_x", "sp ace", "tab\t", "nl\n", "bot\n", "caf\u00e9",
    "\u212aelvin",  # KELVIN SIGN: lower-cases to 'k', must not pass as ASCII
    "a..b", "a\u2028b", "a\u202eb", "a\x1bb", "a\x85b", "\ufeffa",
]


@pytest.mark.parametrize("value", BAD)
def test_bad_names_are_refused(value):
    with pytest.raises(ValueError, match="not allowed"):
        check_name(value, "model")


@pytest.mark.parametrize("value", BAD)
def test_bad_versions_are_refused(value):
    with pytest.raises(ValueError, match="not allowed"):
        check_version(value)


@pytest.mark.parametrize("value", ["support-bot", "a", "a" * 63, "bge.small_v2", "0x"])
def test_good_names(value):
    assert check_name(value) == value


@pytest.mark.parametrize("value", ["v1.3", "1.0.0+build.7", "v2-rc.1", "2026.11.29"])
def test_good_versions(value):
    assert check_version(value) == value


def test_non_strings_are_refused():
    with pytest.raises(ValueError):
        check_name(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        check_version(13)  # type: ignore[arg-type]


def test_every_error_cellar_defines_is_in_the_one_tree_and_drawn():
    """Every CellarError subclass lives in registry.errors and its docstring's tree names it."""
    import inspect
    import pkgutil

    import registry
    from registry import errors

    for info in pkgutil.walk_packages(registry.__path__, "registry."):
        module = __import__(info.name, fromlist=["_"])
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, errors.CellarError):
                assert obj.__module__ == "registry.errors", f"{info.name}.{name} is outside registry.errors"
    drawn = errors.__doc__
    for name, obj in vars(errors).items():
        if inspect.isclass(obj) and issubclass(obj, errors.CellarError):
            assert f" {name} " in drawn, f"{name} is not drawn in registry.errors' tree"
