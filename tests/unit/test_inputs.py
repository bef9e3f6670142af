"""Input rules (registry.inputs): lengths, control characters, secrets in URLs, terminal safety."""

from __future__ import annotations

import pytest

from registry import inputs
from registry.errors import InvalidInput

CONTROL = ["\n", "\r", "\x00", "\x1b[31m", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\u202e",
           "\u2066", "\u200f", "\ud800"]


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize("check", [inputs.check_actor, inputs.check_reason])
def test_actors_and_reasons_refuse_control_characters(check, char):
    with pytest.raises(InvalidInput, match=r"^(actor|reason): control character U\+"):
        check(f"ada{char}evil")


@pytest.mark.parametrize("check", [inputs.check_actor, inputs.check_reason, inputs.check_message])
def test_plain_text_passes_unchanged(check):
    assert check("Ada Lovelace <ada@example.org> — café ✓") == "Ada Lovelace <ada@example.org> — café ✓"


def test_a_newline_in_an_actor_names_the_field_and_shows_it_escaped():
    with pytest.raises(InvalidInput) as err:
        inputs.check_actor("ada\n2026-01-01 push evil@v1")
    assert str(err.value).startswith("actor: control character U+000A (LINE FEED) at position 3")
    assert "\n" not in str(err.value) and "ada⏎2026" in str(err.value)


def test_messages_may_span_lines_but_not_hold_escapes():
    assert inputs.check_message("Friendlier persona\n\n- shorter answers\n\tindented\n")
    with pytest.raises(InvalidInput, match=r"^message: control character U\+001B .*newlines and tabs are fine"):
        inputs.check_message("ok \x1b[2J cleared")
    with pytest.raises(InvalidInput, match=r"^message: control character U\+000D"):
        inputs.check_message("line\r\nline")


@pytest.mark.parametrize(("check", "limit"), [
    (inputs.check_actor, 255), (inputs.check_reason, 1000), (inputs.check_message, 10_000)])
def test_lengths_are_capped(check, limit):
    assert check("a" * limit)
    with pytest.raises(InvalidInput, match=rf"{limit + 1} characters, over the limit of {limit}"):
        check("a" * (limit + 1))


def test_none_reason_and_message_pass():
    assert inputs.check_reason(None) is None and inputs.check_message(None) is None


def test_check_text_names_any_field():
    with pytest.raises(InvalidInput, match=r"^bind_addr: 65 characters"):
        inputs.check_text("1" * 65, "bind_addr", 64)
    with pytest.raises(InvalidInput, match=r"^env_name: expected text, got int"):
        inputs.check_text(3, "env_name", 64)  # type: ignore[arg-type]


def test_secret_text_is_not_echoed():
    with pytest.raises(InvalidInput) as err:
        inputs.check_text("hunter2\nmore", "token", 100, secret=True)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("value", [
    "postgresql://app:s3cret@db:5432/app", "https://user:tok@example.org/x",
    "--db=redis://:s3cret@cache:6379/0", "amqp://guest:s3cret@rabbit"])
def test_env_values_that_are_urls_with_a_password_are_secrets(value):
    problem = inputs.env_value_error("DATABASE_URL", value)
    assert problem and "runtime.secrets" in problem and "s3cret" not in problem and "tok" not in problem


@pytest.mark.parametrize("value", [
    "postgresql://app@db:5432/app", "https://example.org/a:b@c", "http://localhost:8080/v1",
    "user@example.org", "a:b", "64"])
def test_urls_without_a_password_are_fine(value):
    assert inputs.env_value_error("X", value) is None


def test_env_values_refuse_newline_and_nul_without_echoing():
    for value in ("64\nEVIL=1", "64\x00"):
        problem = inputs.env_value_error("MAX_TOKENS", value)
        assert problem and problem.startswith("MAX_TOKENS: control character") and "EVIL" not in problem


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def test_http_methods(method):
    assert inputs.method_error(method) is None


@pytest.mark.parametrize("method", ["POST\r\nX-Evil: 1", "GET ", "", "BREW", "post", 7])
def test_not_http_methods(method):
    problem = inputs.method_error(method)
    assert problem and "not an HTTP method" in problem and "\r" not in problem and "\n" not in problem


def test_a_lowercase_method_gets_a_hint():
    assert "(write POST)" in inputs.method_error("post")


def test_tensor_fields_fit_their_columns():
    inputs.check_tensor("t" * 1024, "F32", "[1, 2]", "weights[0]: w.safetensors")
    with pytest.raises(InvalidInput, match=r"tensor name: 1025 characters, over the limit of 1024"):
        inputs.check_tensor("t" * 1025, "F32", "[1]", "weights[0]: w.safetensors")
    with pytest.raises(InvalidInput, match=r"tensor 'x' dtype: 33 characters, over the limit of 32"):
        inputs.check_tensor("x", "F" * 33, "[1]", "weights[0]: w.safetensors")
    with pytest.raises(InvalidInput, match=r"tensor 'x' has a shape of 256 characters"):
        inputs.check_tensor("x", "F32", "[" + "1" * 254 + "]", "weights[0]: w.safetensors")
    with pytest.raises(InvalidInput, match=r"tensor name: control character"):
        inputs.check_tensor("a\nb", "F32", "[1]", "weights[0]: w.safetensors")


def test_prompt_size_limit_is_configurable(monkeypatch):
    assert inputs.max_prompt_bytes() == 1 << 20
    monkeypatch.setenv("REGISTRY_MAX_PROMPT_BYTES", "10")
    inputs.check_prompt_size(10, "prompts.system", "system")
    with pytest.raises(InvalidInput, match=r"^prompts\.system: system is 11 bytes, over the 10-byte limit"):
        inputs.check_prompt_size(11, "prompts.system", "system")
    monkeypatch.setenv("REGISTRY_MAX_PROMPT_BYTES", "lots")
    with pytest.raises(InvalidInput, match="REGISTRY_MAX_PROMPT_BYTES='lots' is not a positive number"):
        inputs.max_prompt_bytes()


@pytest.mark.parametrize(("value", "problem"), [
    ({"a": [1, 2.5, None, True, "x", {"b": {}}]}, None),
    ({1: "x"}, "key 1 is not a string"),
    ({"when": __import__("datetime").date(2026, 1, 1)}, "date value '2026-01-01' is not JSON"),
    ([float("nan")], "nan is not a JSON number"),
    ({"b": b"\x00"}, "bytes value"),
])
def test_json_bodies_must_be_json(value, problem):
    got = inputs.json_error(value)
    assert got == problem if problem is None else problem in got


@pytest.mark.parametrize(("text", "shown"), [
    ("plain", "plain"),
    ("two\nlines", "two\u23celines"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("tab\there", "tab\\x09here"),
    ("cr\rover", "cr\\x0dover"),
    ("nul\x00", "nul\\x00"),
    ("c1\x9b2J", "c1\\x9b2J"),
    ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
    ("ls\u2028x", "ls\\u2028x"),
    ("café ✓ 名前", "café ✓ 名前"),
])
def test_safe_for_terminal(text, shown):
    assert inputs.safe_for_terminal(text) == shown
    assert not inputs.has_control(inputs.safe_for_terminal(text))


def test_safe_for_terminal_takes_any_object():
    assert inputs.safe_for_terminal(None) == "None" and inputs.safe_for_terminal(3) == "3"


def test_names_in_a_primary_key_are_capped_in_bytes_too():
    inputs.check_file_name("é" * 1024, "weights[0]")  # 2048 bytes
    with pytest.raises(InvalidInput, match=r"^weights\[0\]: 3000 bytes as UTF-8, over the limit of 2048"):
        inputs.check_file_name("名" * 1000, "weights[0]")
