"""The scrubber: secrets in every form and every cut never survive; URLs lose their credentials."""

from __future__ import annotations

import base64
import binascii
import json
import re
from urllib.parse import quote, quote_plus

import pytest

from registry.trust import secrets
from registry.trust.secrets import MASK, MIN_FRAGMENT, Scrubber, mask_url, mask_urls_in, untrusted

SECRET = "Zq8#kP2v!Lm4@Rt7&Xw1-Bn5^Cd9%Hf3"  # 32 characters, no '.', '*' or space
ODD = 'pa"ss\\wörd/€-Tok3n!'  # quotes, a backslash, a slash, non-ASCII
LIMIT = 200


def _common(a: str, b: str) -> int:
    """Length of the longest common substring of a and b."""
    best = 0
    for i in range(len(a)):
        for j in range(i + best + 1, len(a) + 1):
            if a[i:j] in b:
                best = j - i
            else:
                break
    return best


def test_the_secret_is_32_characters():
    assert len(SECRET) == 32


# --- cuts --------------------------------------------------------------------------------


@pytest.mark.parametrize("survive", range(len(SECRET) + 1))
def test_a_prefix_left_at_the_end_of_a_200_character_window_never_survives(survive):
    text = "." * 300 + SECRET + "." * 300
    window = text[300 + survive - LIMIT: 300 + survive]
    assert len(window) == LIMIT and window.endswith(SECRET[:survive])
    out = Scrubber([SECRET]).scrub(window)
    assert _common(out, SECRET) < MIN_FRAGMENT
    if survive < MIN_FRAGMENT:  # below the minimum nothing is masked: ordinary text ends stay
        assert out == window


@pytest.mark.parametrize("survive", range(len(SECRET) + 1))
def test_a_suffix_left_at_the_start_of_a_200_character_window_never_survives(survive):
    text = "." * 300 + SECRET + "." * 300
    start = 300 + len(SECRET) - survive
    window = text[start:start + LIMIT]
    assert window.startswith(SECRET[len(SECRET) - survive:])
    out = Scrubber([SECRET]).scrub(window)
    assert _common(out, SECRET) < MIN_FRAGMENT
    if survive < MIN_FRAGMENT:
        assert out == window


def test_every_200_character_window_over_prose_keeps_no_fragment():
    prose = "The model server said: request failed, retry later. " * 8
    text = prose + "token=" + SECRET + " and again " + SECRET + "\n" + prose
    scrubber = Scrubber([SECRET])
    for start in range(len(text) - LIMIT + 1):
        out = scrubber.scrub(text[start:start + LIMIT])
        assert _common(out, SECRET) < MIN_FRAGMENT, (start, out)


@pytest.mark.parametrize("size", [MIN_FRAGMENT, 5, 10, 20])
def test_a_text_that_is_a_piece_from_inside_a_secret_is_masked(size):
    scrubber = Scrubber([SECRET])
    for start in range(len(SECRET) - size + 1):
        assert scrubber.scrub(SECRET[start:start + size]) == MASK


def test_fragments_followed_or_preceded_by_whitespace_are_masked():
    out = Scrubber([SECRET]).scrub("\n" + SECRET[-12:] + " ... " + SECRET[:15] + "\n  ")
    assert _common(out, SECRET) < MIN_FRAGMENT
    assert out.startswith("\n***") and out.endswith("***\n  ")


@pytest.mark.parametrize("survive", range(len(SECRET) + 1))
def test_scrub_and_cut_masks_the_whole_secret_before_cutting(survive):
    text = "x" * (LIMIT - survive) + SECRET + " tail"
    out = Scrubber([SECRET]).scrub_and_cut(text, LIMIT)
    assert len(out) <= LIMIT
    assert _common(out, SECRET) < MIN_FRAGMENT


def test_scrub_and_cut_keeps_the_tail_for_logs():
    out = Scrubber([SECRET]).scrub_and_cut("start " + "y" * 300 + SECRET + " the end", 40, keep="tail")
    assert out.endswith("*** the end") and out.startswith(secrets.ELLIPSIS) and len(out) == 40


# --- escaped forms --------------------------------------------------------------------------


def _forms_of(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "raw": value,
        "json": json.dumps(value)[1:-1],
        "json-unicode": json.dumps(value, ensure_ascii=False)[1:-1],
        "json-twice": json.dumps(json.dumps(value)[1:-1])[1:-1],
        "json-slash": json.dumps(value)[1:-1].replace("/", "\\/"),
        "quote": quote(value, safe=""),
        "quote-path": quote(value),
        "quote-plus": quote_plus(value),
        "quote-lower": re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), quote(value, safe="")),
        "base64": base64.b64encode(raw).decode(),
        "base64-urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
    }


@pytest.mark.parametrize("value", [SECRET, ODD])
@pytest.mark.parametrize("name", list(_forms_of(SECRET)))
def test_every_encoded_form_is_masked_in_full(value, name):
    form = _forms_of(value)[name]
    out = Scrubber([value]).scrub(f"server said {{\"detail\": \"{form}\"}} (HTTP 500)")
    assert form not in out and MASK in out
    assert out.startswith("server said") and out.endswith("(HTTP 500)")


@pytest.mark.parametrize("value", [SECRET, ODD])
@pytest.mark.parametrize("name", list(_forms_of(SECRET)))
def test_a_cut_through_an_encoded_form_leaves_no_fragment(value, name):
    form = _forms_of(value)[name]
    scrubber = Scrubber([value])
    shortest = {"hex": secrets.HEX_FRAGMENT, "HEX": secrets.HEX_FRAGMENT}.get(
        name, secrets.BASE64_FRAGMENT if name.startswith("base64") else MIN_FRAGMENT)
    for survive in range(len(form)):
        at_end = scrubber.scrub("." * 50 + form[:survive])
        at_start = scrubber.scrub(form[len(form) - survive:] + "." * 50)
        assert _common(at_end, form) < shortest, (survive, at_end)
        assert _common(at_start, form) < shortest, (survive, at_start)


def _decoded_runs(text: str) -> list[bytes]:
    """Every base64 run in text decoded at each of the 4 character alignments."""
    out = []
    for run in re.findall(r"[A-Za-z0-9+/_-]{4,}", text):
        run = run.replace("-", "+").replace("_", "/")
        for shift in range(4):
            piece = run[shift:]
            piece = piece[: len(piece) - len(piece) % 4]
            try:
                out.append(base64.b64decode(piece))
            except binascii.Error:
                pass
    return out


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
@pytest.mark.parametrize("before", range(6))
@pytest.mark.parametrize("after", range(3))
def test_a_secret_inside_a_longer_base64_text_is_masked_at_every_alignment(encode, before, after):
    payload = b'{"u":"' [:before] + SECRET.encode() + b'"}x'[:after]
    out = Scrubber([SECRET]).scrub("Authorization: Basic " + encode(b"admin:" + payload).decode() + " rejected")
    assert MASK in out
    for decoded in _decoded_runs(out):
        for i in range(len(SECRET) - 1):  # not even 2 bytes of the secret in a row decode again
            assert SECRET.encode()[i:i + 2] not in decoded, (decoded, out)


def test_ordinary_text_is_left_alone():
    scrubber = Scrubber(["P0" + SECRET, "@@" + SECRET[::-1], "hf_" + SECRET[:10]])
    for text in ("HTTP 503", "503", "status 404", "404 Not Found", "ok", "{\"status\": \"ok\"}",
                 "Internal Server Error"):
        assert scrubber.scrub(text) == text


def test_values_too_short_to_scrub_are_ignored_and_the_text_kept():
    scrubber = Scrubber(["abc", "", "ok"])
    assert not scrubber
    assert scrubber.scrub("abc ok") == "abc ok"


def test_a_secret_inside_a_longer_secret_is_masked_without_leftovers():
    out = Scrubber(["token-1234", "xx-token-1234-yy"]).scrub("a xx-token-1234-yy b token-1234 c")
    assert out == "a *** b *** c"


def test_scrub_json_scrubs_every_string_of_an_event_detail():
    detail = {"error": f"HTTP 500 {SECRET}", "nested": [SECRET[:20], {"k": 1}], SECRET: True}
    out = Scrubber([SECRET]).scrub_json(detail)
    assert _common(json.dumps(out), SECRET) < MIN_FRAGMENT
    assert out["nested"][1] == {"k": 1}


def test_extended_adds_values():
    scrubber = Scrubber([SECRET]).extended(["other-secret-value"])
    assert scrubber.scrub(f"{SECRET} other-secret-value") == "*** ***"


# --- where the values come from --------------------------------------------------------------


def test_secret_values_from_the_environment_a_container_and_urls():
    environ = {"HF_TOKEN": "hf_abcdefgh", "MODEL_API": "plain", "DB_PASS": "declared-pw",
               "DOCKER_HOST": "tcp://admin:dockerpw@host:2376", "SHORT_KEY": "ab", "HOME": "/home/x"}
    container = {"OPENAI_API_KEY": "sk-container", "DB_PASS": "old-declared"}
    values = secrets.secret_values(environ, declared=["DB_PASS"], container_env=container)
    assert values == {"hf_abcdefgh", "declared-pw", "dockerpw", "sk-container", "old-declared"}


def test_from_environ_adds_credentials_of_other_urls():
    scrubber = secrets.from_environ({}, urls=["postgresql://cellar:db%2Fpw%21@db/reg", None or ""])
    assert scrubber.scrub("login db/pw! failed; raw db%2Fpw%21") == "login *** failed; raw ***"


# --- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "masked"), [
    ("tcp://admin:PW@host:2376", "tcp://admin:***@host:2376"),
    ("tcp://admin:s3cr%40t@10.0.0.5:2376", "tcp://admin:***@10.0.0.5:2376"),
    ("tcp://admin:PW@[2001:db8::1]:2376", "tcp://admin:***@[2001:db8::1]:2376"),
    ("tcp://[::1]:2375", "tcp://[::1]:2375"),
    ("ssh://deploy@gpu-01", "ssh://deploy@gpu-01"),
    ("ssh://deploy:pw@gpu-01:22", "ssh://deploy:***@gpu-01:22"),
    ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
    ("postgresql://cellar:hunter22@db.internal:5432/registry", "postgresql://cellar:***@db.internal:5432/registry"),
    ("postgresql+psycopg://cellar:pw@[fe80::1%25eth0]:5432/reg?sslmode=require",
     "postgresql+psycopg://cellar:***@[fe80::1%25eth0]:5432/reg?sslmode=require"),
    ("postgresql://cellar@db/reg?password=hunter22&sslmode=verify-full",
     "postgresql://cellar@db/reg?password=***&sslmode=verify-full"),
    ("postgresql://:onlypw@db/reg", "postgresql://:***@db/reg"),
    ("sqlite:////srv/cellar/registry.db", "sqlite:////srv/cellar/registry.db"),
    ("https://ghp_abcdefghijklmnop@github.com/acme/bot.git", "https://***@github.com/acme/bot.git"),
    ("https://x-access-token:ghs_abc@github.com/acme", "https://***:***@github.com/acme"),
    ("https://api.example.com/v1?api_key=k123&q=1#access_token=t456",
     "https://api.example.com/v1?api_key=***&q=1#access_token=***"),
    ("https://example.com/docs/page", "https://example.com/docs/page"),
    ("https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com/***"),
    ("https://hooks.example/services/T000/B000/XXXX", "https://hooks.example/***"),
    ("https://discord.com/api/webhooks/123/tok", "https://discord.com/***"),
    ("https://alerts.example.com:8443/webhook/abc", "https://alerts.example.com:8443/***"),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize(("url", "masked"), [
    ("https://chat.example.com/v1/spaces/AAA/messages?key=K&token=T", "https://chat.example.com/***"),
    ("https://u:p@[2001:db8::2]:9000/hook/x", "https://[2001:db8::2]:9000/***"),
    ("http://10.1.2.3/services/T/B/X", "http://10.1.2.3/***"),
])
def test_mask_url_with_a_secret_path_keeps_only_scheme_and_host(url, masked):
    assert mask_url(url, secret_path=True) == masked


def test_mask_url_leaves_text_that_is_no_url_alone():
    assert mask_url("not a url") == "not a url"
    assert mask_url("ghcr.io/acme/bot:1.3@sha256:" + "a" * 64) == "ghcr.io/acme/bot:1.3@sha256:" + "a" * 64


def test_mask_url_survives_an_unparsable_host():
    assert "hunter22" not in mask_url("tcp://admin:hunter22@[::1:2376")


def test_url_secrets():
    assert secrets.url_secrets("tcp://admin:PW%2Fx1@host") == {"PW%2Fx1", "PW/x1"}
    assert secrets.url_secrets("https://ghp_abcdef@github.com") == {"ghp_abcdef"}
    assert secrets.url_secrets("ssh://deploy@host") == set()
    assert secrets.url_secrets("postgresql://u@db/x?password=hunter22") == {"hunter22"}


def test_mask_urls_in_free_text():
    text = ("push warning: cannot reach tcp://admin:hunter22@[2001:db8::1]:2376 (refused); "
            "alert sent to https://hooks.slack.com/services/T0/B0/XYZ. db=postgresql://u:pw99@db/reg, "
            "custom hook https://notify.example.com/abc/def?x=1 done")
    out = mask_urls_in(text, webhooks=["https://notify.example.com/"])
    assert "hunter22" not in out and "XYZ" not in out and "pw99" not in out and "abc/def" not in out
    assert "tcp://admin:***@[2001:db8::1]:2376 (refused)" in out
    assert "https://hooks.slack.com/***" in out and "https://notify.example.com/*** done" in out


# --- untrusted text -----------------------------------------------------------------------


def test_untrusted_escapes_control_and_invisible_characters():
    body = "\x1b[2J\x1b[31mFAIL\x07 \u202eevil\u200b\r\nnext\tcol\x00"
    out = untrusted(body, 200)
    assert out == "\\x1b[2J\\x1b[31mFAIL\\x07 \\u202eevil\\u200b\\r\\nnext\\tcol\\x00"
    assert untrusted("a\nb", 10, newlines=True) == "a\nb"


def test_untrusted_is_bounded_and_never_cuts_an_escape():
    for limit in range(1, 30):
        out = untrusted("\x1b" * 50, limit)
        assert len(out) <= limit
        assert re.fullmatch(r"(\\x1b)*…", out)


def test_untrusted_scrubs_before_cutting_and_masks_urls():
    scrubber = Scrubber([SECRET])
    body = "y" * 190 + json.dumps({"token": SECRET, "db": "postgresql://u:hunter22@db/x"})
    out = untrusted(body, 200, scrubber=scrubber)
    assert len(out) <= 200 and _common(out, SECRET) < MIN_FRAGMENT
    out = untrusted(body.encode(), 400, scrubber=scrubber)
    assert "hunter22" not in out and _common(out, SECRET) < MIN_FRAGMENT


def test_untrusted_keeps_the_tail_of_a_log():
    logs = "\n".join(f"line {i}" for i in range(100)) + f"\nfatal: bad key {SECRET}"
    out = untrusted(logs, 60, scrubber=Scrubber([SECRET]), keep="tail", newlines=True)
    assert out.endswith("fatal: bad key ***") and out.startswith("…") and len(out) <= 60


def test_untrusted_decodes_invalid_utf8_bytes():
    assert untrusted(b"ok \xff\xfe", 20) == "ok \ufffd\ufffd"
