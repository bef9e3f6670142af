"""Webhook delivery to a real local listener: retries, never fatal, the URL never shown."""

from __future__ import annotations

import logging
import socket

import pytest

from registry.errors import InvalidInput
from registry.health import alerting
from tests.listener import Listener


def test_a_message_is_posted_as_slack_text():
    with Listener() as hook:
        assert alerting.Webhook(hook.url).send("prod is failing") is True
    assert hook.messages == [{"text": "prod is failing"}]


def test_a_failing_endpoint_is_retried_with_backoff_then_logged_without_the_url(caplog, capsys):
    pauses = []
    with Listener(status=500) as hook, caplog.at_level(logging.DEBUG):
        hook_ = alerting.Webhook(hook.url, attempts=3, backoff_s=0.5, sleep=pauses.append)
        assert hook_.send("x") is False
    assert hook.attempts == 3 and pauses == [0.5, 1.0]
    assert "HTTP 500" in caplog.text and "failed after 3 attempts" in caplog.text
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, repr(hook_)):
        assert "s3cr3t-token" not in text and str(hook.server.server_port) not in text


def test_an_unreachable_endpoint_is_not_fatal_and_not_named(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/hooks/s3cr3t"
        with caplog.at_level(logging.WARNING):
            assert alerting.Webhook(url, attempts=2, sleep=lambda _: None).send("x") is False
    assert "connection refused" in caplog.text and "s3cr3t" not in caplog.text


def test_a_bad_url_is_refused_without_echoing_it():
    with pytest.raises(InvalidInput) as err:
        alerting.Webhook("ftp://example.org/s3cr3t")
    assert "s3cr3t" not in str(err.value)


def test_the_url_can_come_from_an_environment_variable(monkeypatch):
    monkeypatch.delenv("CELLAR_HOOK", raising=False)
    with pytest.raises(InvalidInput, match="CELLAR_HOOK holds no webhook URL"):
        alerting.from_env("CELLAR_HOOK")
    with Listener() as hook:
        monkeypatch.setenv("CELLAR_HOOK", hook.url)
        assert alerting.from_env("CELLAR_HOOK").send("hi")
    assert hook.texts == ["hi"]
