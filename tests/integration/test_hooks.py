"""Hooks (registry.hooks): audit events POSTed to a real receiver on loopback, signed, in order,
at least once, from the audit log as the outbox; a receiver that is down, failing, hanging,
and a deliverer killed mid-request. Both databases; only the clock is mocked."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from registry.errors import InvalidInput, NotFound
from registry.hooks import delivery
from tests.conftest import cli, push_versions

SECRET = "hook-secret-" + "9f" * 8


class Receiver:
    """A webhook receiver on 127.0.0.1: checks each request's signature and timestamp, keeps
    the bodies it accepted; ``mode`` is ok, fail (500), or hang (holds the request until
    ``release``). ``arrived`` is set when a request comes in."""

    def __init__(self, secret: str | None = SECRET):
        self.secret, self.mode = secret, "ok"
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.bad_signatures = 0
        self.arrived, self.release = threading.Event(), threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.arrived.set()
                if receiver.mode == "hang":
                    receiver.release.wait(30)
                    return
                if receiver.mode == "garbage":  # not HTTP at all
                    self.wfile.write(b"SSH-2.0-OpenSSH\r\n\r\n")
                    return
                if receiver.mode == "trickle":  # a byte at a time, each well within a read's time limit
                    while not receiver.release.wait(0.1):
                        try:
                            self.wfile.write(b"H")
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                if receiver.secret is not None and not receiver.signed(self.headers, body):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.mode == "fail":
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/cellar"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def signed(self, headers, body: bytes) -> bool:
        ts = headers.get("X-Cellar-Timestamp", "")
        want = "sha256=" + hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(headers.get("X-Cellar-Signature-256", ""), want)

    @property
    def actions(self) -> list[tuple[str, str]]:
        return [(b["action"], b["ref"]) for b in self.bodies]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    r = Receiver()
    yield r
    r.close()


def test_events_reach_the_receiver_signed_in_order_once(reg, model_dir, receiver, frozen_clock):
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET", web_url="http://cellar.internal:8000")
    push_versions(reg, model_dir, "v1", "v2")
    reg.deprecate("v1", reason="superseded")
    assert [h.pending for h in reg.hooks()] == [3]
    done = reg.deliver_hooks()
    assert (done.delivered, done.failed, done.waiting) == (3, 0, 0)
    assert receiver.actions == [("push", "support-bot@v1"), ("push", "support-bot@v2"),
                                ("deprecate", "support-bot@v1")]
    assert receiver.bad_signatures == 0
    first = receiver.bodies[0]
    event = reg.audit(action="push", limit=10)[-1]
    assert (first["id"], first["event_id"], first["schema"], first["version"], first["actor"]) == (
        event.hash, event.id, "cellar.event.v1", "v1", "tester")
    assert first["at"] == "2026-11-01T12:00:00Z"  # UTC, stated
    assert first["links"]["version"] == "http://cellar.internal:8000/v/support-bot/v1"
    assert receiver.bodies[2]["summary"] == "tester deprecated support-bot@v1: superseded"
    assert receiver.headers[0]["X-Cellar-Event"] == "push"
    assert reg.deliver_hooks().delivered == 0  # nothing twice
    assert [(d.event_id, d.outcome, d.status) for d in reg.hook_deliveries("ops")] == [
        (event.id + 2, "delivered", 204), (event.id + 1, "delivered", 204), (event.id, "delivered", 204)]


def test_a_new_hook_starts_now_and_takes_only_its_events(reg, model_dir, receiver):
    push_versions(reg, model_dir, "v1")
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET", events=["deprecate"])
    push_versions(reg, model_dir, "v2")
    reg.deprecate("v2")
    assert reg.deliver_hooks().delivered == 1
    assert receiver.actions == [("deprecate", "support-bot@v2")]


def test_a_receiver_down_for_a_while_misses_nothing_and_order_holds(reg, model_dir, receiver, frozen_clock):
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    receiver.mode = "fail"
    push_versions(reg, model_dir, "v1", "v2")
    done = reg.deliver_hooks()
    assert (done.delivered, done.failed, done.waiting) == (0, 1, 2)  # v2 waits behind v1: order
    assert reg.deliver_hooks().failed == 0  # backing off: not tried again yet
    (hook,) = reg.hooks()
    assert hook.attempts == 1 and hook.next_at == frozen_clock.at + delivery.timedelta(seconds=1)
    frozen_clock.tick(1)
    assert reg.deliver_hooks().failed == 1
    frozen_clock.tick(2)
    receiver.mode = "ok"
    assert reg.deliver_hooks().delivered == 2
    assert receiver.actions == [("push", "support-bot@v1"), ("push", "support-bot@v2")]
    attempts = [(d.action, d.attempt, d.outcome, d.status) for d in reversed(reg.hook_deliveries("ops"))]
    assert attempts == [("push", 1, "failed", 500), ("push", 2, "failed", 500), ("push", 3, "delivered", 204),
                        ("push", 1, "delivered", 204)]


def test_a_receiver_failing_forever_is_given_up_on_after_bounded_attempts(reg, model_dir, receiver,
                                                                         frozen_clock):
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    receiver.mode = "fail"
    push_versions(reg, model_dir, "v1", "v2")
    for attempt in range(1, delivery.MAX_ATTEMPTS + 1):
        reg.deliver_hooks()
        frozen_clock.tick(delivery.backoff_s(attempt))
    outcomes = [d.outcome for d in reversed(reg.hook_deliveries("ops"))]
    assert outcomes[:delivery.MAX_ATTEMPTS] == ["failed"] * (delivery.MAX_ATTEMPTS - 1) + ["gave-up"]
    receiver.mode = "ok"
    reg.deliver_hooks()
    assert receiver.actions == [("push", "support-bot@v2")]  # v1 given up (visible), v2 went on
    assert "gave-up" in cli("hook", "deliveries", "ops").stdout


def test_a_hanging_receiver_costs_one_time_limit(reg, model_dir, receiver, monkeypatch):
    monkeypatch.setattr(delivery, "TIMEOUT_S", 0.5)
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    receiver.mode = "hang"
    push_versions(reg, model_dir, "v1")  # the push appended its event and nothing more
    assert not receiver.arrived.is_set()
    done = reg.deliver_hooks()
    assert done.failed == 1
    (attempt,) = reg.hook_deliveries("ops")
    assert attempt.detail == "timed out"


def test_a_trickling_receiver_is_given_up_on_within_twice_the_time_limit(reg, model_dir, receiver, monkeypatch):
    monkeypatch.setattr(delivery, "TIMEOUT_S", 0.5)
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    receiver.mode = "trickle"
    push_versions(reg, model_dir, "v1")
    done = reg.deliver_hooks()  # each byte comes within 0.5 s: only the whole request's bound ends it
    assert done.failed == 1
    assert reg.hook_deliveries("ops")[0].detail == "timed out"


def test_an_answer_that_is_not_http_is_a_failed_attempt(reg, model_dir, receiver):
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    receiver.mode = "garbage"
    push_versions(reg, model_dir, "v1")
    assert reg.deliver_hooks().failed == 1
    assert reg.hook_deliveries("ops")[0].detail == "BadStatusLine"


def test_kill_9_mid_delivery_loses_nothing(home, reg, model_dir, receiver):
    """The deliverer dies while the receiver holds its request: the cursor did not move, so the
    next deliverer (taking over the dead one's lease at once, same host) sends it again."""
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    push_versions(reg, model_dir, "v1")
    receiver.mode = "hang"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "hook", "deliver"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "REGISTRY_HOME": str(home)})
    try:
        assert receiver.arrived.wait(60), "the deliverer never sent"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    receiver.mode = "ok"
    receiver.release.set()
    done = reg.deliver_hooks()
    assert (done.delivered, done.busy) == (1, [])
    assert receiver.actions == [("push", "support-bot@v1")]
    assert reg.deliver_hooks().delivered == 0


def test_a_live_deliverer_holds_its_hook(reg, model_dir, receiver, monkeypatch):
    monkeypatch.setattr(delivery, "TIMEOUT_S", 10)
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    push_versions(reg, model_dir, "v1")
    receiver.mode = "hang"
    first = threading.Thread(target=reg.deliver_hooks)
    first.start()
    try:
        assert receiver.arrived.wait(30)
        other = delivery.Deliver(reg.cfg)
        other.owner = "another-host:1"  # another process, alive: it must not send the same event
        assert other.run().busy == ["ops"]
    finally:
        receiver.mode = "ok"
        receiver.release.set()
        first.join(30)


@pytest.mark.parametrize("url", [
    "https://user:p4ssw0rd-long@hooks.example.org/in",
    "https://ghp_0123456789abcdefghij@ci.example.org/in",
    "https://ci.example.org/in?token=0123456789abcdef",
    "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXX",
    "https://example.org/webhooks/0123456789abcdef",
])
def test_a_url_carrying_a_secret_is_refused_and_never_stored(reg, url):
    with pytest.raises(InvalidInput, match="--url-env"):
        reg.add_hook("ops", url)
    assert reg.hooks() == []
    out = cli("hook", "add", "ops", url, code=1)
    assert url not in out.stdout + out.stderr


def test_a_url_in_the_environment_is_read_when_delivering_and_never_shown(reg, model_dir, receiver, monkeypatch):
    monkeypatch.setenv("OPS_URL", receiver.url + "?token=0123456789abcdef")
    reg.add_hook("ops", url_env="OPS_URL", secret_env="HOOK_SECRET")
    push_versions(reg, model_dir, "v1")
    assert reg.deliver_hooks().delivered == 1
    shown = cli("hook", "list").stdout + cli("audit").stdout + cli("hook", "deliveries", "ops").stdout
    assert "$OPS_URL" in shown and "0123456789abcdef" not in shown


def test_nothing_goes_unsigned_when_the_secret_is_missing(reg, model_dir, receiver, monkeypatch):
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    monkeypatch.delenv("HOOK_SECRET")
    push_versions(reg, model_dir, "v1")
    assert reg.deliver_hooks().failed == 1
    assert not receiver.arrived.is_set()
    assert "HOOK_SECRET" in reg.hook_deliveries("ops")[0].detail


@pytest.mark.parametrize("args,message", [
    (("ops", "ftp://example.org/x"), "http"),
    (("ops", "http://example.org/x", "--events", "push,bogus"), "unknown event 'bogus'"),
    (("ops", "http://example.org/x", "--format", "xml"), "--format"),
    (("ops", "http://example.org/x", "--secret-env", "NOT SET"), "environment variable name"),
    (("ops", "http://example.org/x", "--secret-env", "UNSET_HOOK_SECRET"), "is empty here"),
    (("bad name", "http://example.org/x"), "hook name"),
    (("ops",), "--url-env"),
])
def test_bad_hooks_are_one_line_errors(reg, args, message):
    out = cli("hook", "add", *args, code=1)
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert reg.hooks() == []


def test_the_cli_round_trip_and_slack_text(reg, model_dir, receiver):
    cli("hook", "add", "chat", receiver.url, "--secret-env", "HOOK_SECRET", "--format", "slack")
    cli("hook", "add", "chat", receiver.url, code=1)  # exists
    assert "Delivered: HTTP 204" in cli("hook", "test", "chat").stdout
    assert receiver.bodies[-1] == {"text": "tester sent a test event"}
    push_versions(reg, model_dir, "v1")
    assert "1 delivered" in cli("hook", "deliver").stdout
    assert receiver.bodies[-1]["text"].startswith("tester pushed support-bot@v1")
    listed = json.loads(cli("hook", "list", "--json").stdout)
    assert [(h["name"], h["pending"], h["signed_with"]) for h in listed] == [("chat", 0, "HOOK_SECRET")]
    cli("hook", "remove", "chat")
    assert cli("hook", "test", "chat", code=1).stderr.startswith("error: no hook named 'chat'")
    assert [e.action for e in reg.audit(limit=3)][:2] == ["hook-remove", "push"]
    receiver.mode = "fail"
    cli("hook", "add", "chat", receiver.url, "--secret-env", "HOOK_SECRET")
    assert "Not delivered: HTTP 500" in cli("hook", "test", "chat", code=1).stderr


def test_watch_records_its_alerts_for_hooks(reg, model_dir, receiver, monkeypatch):
    from registry.health.monitoring import Watch

    reg.add_env("prod", port=18099)
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET", events=["alert"])
    monkeypatch.setenv("SUPPORT_API_TOKEN", "canary-alert-token-1234")
    sent = []
    Watch(reg.cfg, actor="watcher", env_name="prod").record_alert(sent.append)("prod failing: canary-alert-token-1234")
    assert sent == ["prod failing: canary-alert-token-1234"]  # the alert itself as before
    assert reg.deliver_hooks().delivered == 1
    assert receiver.bodies[0]["action"] == "alert" and receiver.bodies[0]["environment"] == "prod"
    assert "canary-alert-token-1234" not in json.dumps(receiver.bodies[0])  # scrubbed before it was recorded


def test_unknown_hook_names_the_known_ones(reg, receiver):
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    with pytest.raises(NotFound, match=r"known: ops"):
        reg.hook_deliveries("nope")


def test_hook_run_stops_on_sigterm(home, reg, model_dir, receiver):
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET")
    push_versions(reg, model_dir, "v1")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "hook", "run", "--every", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "REGISTRY_HOME": str(home)})
    try:
        deadline = time.monotonic() + 60
        while not receiver.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert receiver.actions == [("push", "support-bot@v1")]
    assert proc.returncode == 0 and "hook run stopped" in out, err


def test_promote_failed_promote_and_rollback_reach_the_receiver(docker_env, receiver):
    """Real containers: a promote, a promote that fails and is rolled back automatically, a
    rollback; the receiver hangs meanwhile and no deploy waits for it."""
    reg, env = docker_env
    reg.add_hook("ops", receiver.url, secret_env="HOOK_SECRET", events=["promote", "rollback"])
    receiver.mode = "hang"
    reg.promote("v1.0")
    reg.promote("v1.1", reason="CAB-7")
    with pytest.raises(Exception, match="rolled back automatically"):
        reg.promote("v1.2")  # unhealthy: the automatic rollback restores v1.1
    reg.rollback(env=env)
    assert not receiver.arrived.is_set()  # no deploy sent anything itself
    receiver.mode = "ok"
    receiver.release.set()
    assert reg.deliver_hooks().delivered == 5
    got = [(b["action"], b["version"], b["status"], b["automatic"], b["revision"]) for b in receiver.bodies]
    assert got == [("promote", "v1.0", "deployed", False, 1), ("promote", "v1.1", "deployed", False, 2),
                   ("promote", "v1.2", "failed", False, 3), ("rollback", "v1.1", "deployed", True, 4),
                   ("rollback", "v1.0", "deployed", False, 5)]
    assert receiver.bodies[1]["previous"] == "support-bot@v1.0" and receiver.bodies[1]["reason"] == "CAB-7"
    assert receiver.bodies[1]["environment"] == env
    assert receiver.bodies[3]["summary"] == f"tester automatically rolled {env} back to support-bot@v1.1 (revision 4)"
