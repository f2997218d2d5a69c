"""City scale: the whole loop on two web nodes and Celery pools split by
queue against one PostgreSQL, with RabbitMQ or Redis carrying the tasks; the
broker chosen by the environment; the servers of ``make run`` on IPv6 too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.api_keys import api_key_create
from accounts.models import OtpChallenge
from qr.models import ScanEvent
from services.models import Application, Delivery
from services.routing import endpoints, events
from tests.accounts.factories import CitizenFactory, DepartmentFactory
from tests.payments.test_payments_real_stack import PAYMENTS_FAST
from tests.processes import ROOT, celery_worker, free_port, make_run, wait_for, web_server
from tests.services.department import Answer, DepartmentServer
from tests.services.factories import ServiceFactory
from tests.services.test_routing_real_stack import FAST, FORM
from tests.services.test_routing_real_stack import worker as routing_worker
from tests.test_run_all import run_all

# The local server that rabbitmqctl manages (and .ci/run starts).
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"


# --- The broker follows the environment ---------------------------------------------------


def broker_settings(tmp_path: Path, *, refused: bool = False, **env: str) -> dict:
    """The Celery and cache settings a server started with ``env`` would have
    (or, ``refused``, the error it stops with)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_BROKER_URL_FILE")
    }
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'broker': s.CELERY_BROKER_URL, "
        "'options': s.CELERY_BROKER_TRANSPORT_OPTIONS, 'results': s.CELERY_RESULT_BACKEND, "
        "'cache': s.CACHES['default']['BACKEND'].rsplit('.', 1)[1]}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings.base", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if refused:
        assert result.returncode != 0, result.stdout
        return {"error": result.stderr.strip().splitlines()[-1]}
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_without_servers_the_broker_is_the_file_system(tmp_path) -> None:
    seen = broker_settings(tmp_path)
    assert seen["broker"].startswith("filesystem://")
    assert seen["options"]["data_folder_in"].endswith("broker/messages")
    assert (seen["results"], seen["cache"]) == (None, "LocMemCache")


def test_with_redis_alone_redis_is_the_broker(tmp_path) -> None:
    seen = broker_settings(tmp_path, REDIS_URL="redis://127.0.0.1:6379/3")
    assert seen["broker"] == seen["results"] == "redis://127.0.0.1:6379/3"
    assert seen["options"]["visibility_timeout"] == 3600
    assert seen["cache"] == "RedisCache"


def test_celery_broker_url_takes_precedence_and_redis_keeps_the_rest(tmp_path) -> None:
    seen = broker_settings(
        tmp_path,
        REDIS_URL="redis://127.0.0.1:6379/3",
        CELERY_BROKER_URL="amqp://mcs:secret@rabbit.internal:5672/mcs",
    )
    assert seen["broker"] == "amqp://mcs:secret@rabbit.internal:5672/mcs"
    # RabbitMQ has no visibility timeout (Redis options would be refused or
    # ignored); a publish it blocks gives up after 5 s rather than hang a request.
    assert seen["options"] == {"write_timeout": 5}
    assert (seen["results"], seen["cache"]) == ("redis://127.0.0.1:6379/3", "RedisCache")


def test_the_broker_url_may_come_from_a_file(tmp_path) -> None:
    secret = tmp_path / "broker-url"
    secret.write_text("amqp://mcs:from-a-file@rabbit.internal:5672/mcs\n", encoding="utf-8")
    seen = broker_settings(tmp_path, CELERY_BROKER_URL_FILE=str(secret))
    assert seen["broker"] == "amqp://mcs:from-a-file@rabbit.internal:5672/mcs"
    assert (seen["results"], seen["cache"]) == (None, "LocMemCache")


@pytest.mark.parametrize(
    "url", ["sentinel://10.0.0.5:26379", "sqs://", "redis+sentinel://x", "memory://"]
)
def test_a_broker_nothing_here_configures_is_refused_at_start(tmp_path, url) -> None:
    seen = broker_settings(tmp_path, refused=True, CELERY_BROKER_URL=url)
    assert "ImproperlyConfigured" in seen["error"] and "is not supported" in seen["error"]


# --- make run listens on IPv6 as well -------------------------------------------------------


def test_make_run_serves_the_ipv6_loopback_as_well(monkeypatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("HOST6", raising=False)
    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("STUB_PORT", "9123")
    module = run_all()
    if not module.ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback (::1); the IPv6 tests need one")
    commands = module.commands()
    web = commands["web"]
    binds = [web[i + 1] for i, arg in enumerate(web) if arg == "--bind"]
    assert binds == ["127.0.0.1:8123", "[::1]:8123"]
    dept = commands["dept"]
    hosts = [dept[i + 1] for i, arg in enumerate(dept) if arg == "--host"]
    assert hosts == ["127.0.0.1", "::1"]  # events are addressed to the first
    assert "http://[::1]:8123/" in module.banner()


def test_ipv6_can_be_turned_off_and_another_host_is_left_alone(monkeypatch) -> None:
    monkeypatch.setenv("HOST6", "")
    web = run_all().commands()["web"]
    assert web.count("--bind") == 1
    monkeypatch.delenv("HOST6")
    monkeypatch.setenv("HOST", "10.1.2.3")
    module = run_all()
    assert module.commands()["web"].count("--bind") == 1
    assert "[::1]" not in module.banner()


@pytest.mark.django_db
def test_an_ipv6_literal_host_is_served_when_allowed(api, settings) -> None:
    settings.ALLOWED_HOSTS = ["127.0.0.1", "[::1]"]
    assert api.get("/healthz", HTTP_HOST="[::1]:8000", REMOTE_ADDR="::1").status_code == 200
    refused = api.get("/api/v1/services/", HTTP_HOST="[::2]:8000", REMOTE_ADDR="::1")
    assert refused.status_code == 400


# --- Two web nodes, worker pools by queue, RabbitMQ or Redis ----------------------------------

POOLS = {
    "deliveries": ["deliveries"],
    "payments": ["payments"],
    "default": ["default", "housekeeping"],
}


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )


def rabbitmq_or_fail() -> None:
    """RabbitMQ must answer in this pass: a missing broker is a failure, not a skip."""
    hint = "start it with `rabbitmq-server -detached` (.ci/run does)"
    if shutil.which("rabbitmqctl") is None:
        pytest.fail(f"RabbitMQ is not installed (no rabbitmqctl); {hint}")
    status = rabbitmqctl("status")
    if status.returncode != 0:
        pytest.fail(f"RabbitMQ is not answering; {hint}:\n{status.stderr[-1500:]}")


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A virtual host of this test's own on the local RabbitMQ: its queues
    are nobody else's, and go with it."""
    rabbitmq_or_fail()
    vhost = f"mcs-test-{uuid.uuid4().hex[:12]}"
    for command in (
        ("add_vhost", vhost),
        ("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"),
    ):
        done = rabbitmqctl(*command)
        assert done.returncode == 0, done.stderr
    try:
        yield f"{RABBITMQ}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(params=["rabbitmq", "redis"])
def broker(request, settings) -> Iterator[tuple[str, str]]:
    """(what the servers' CELERY_BROKER_URL says, where the tasks go)."""
    if request.param == "rabbitmq":
        with rabbitmq_vhost() as url:
            yield url, url
    else:
        # Unset (empty): Redis at REDIS_URL, whatever this shell exported.
        yield "", settings.REDIS_URL


def active_queues(broker: str, workers: list[str]) -> dict[str, list[str]]:
    """What each named worker consumes, asked over the broker as an operator would."""
    from celery import Celery

    # Not made the current app: tasks this process sends later (eager, by
    # name through current_app) would otherwise go to this broker unanswered.
    probe = Celery("probe", broker=broker, set_as_current=False)
    probe.conf.broker_connection_timeout = 2
    try:
        answers = probe.control.inspect(destination=workers, timeout=3).active_queues() or {}
    finally:
        probe.close()
    return {name: sorted(queue["name"] for queue in queues) for name, queues in answers.items()}


def tasks_received(log: Path) -> set[str]:
    return set(re.findall(r"Task ([\w.]+)\[[0-9a-f-]+\] received", log.read_text()))


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_the_whole_loop_on_two_web_nodes_and_pools_split_by_queue(broker, tmp_path) -> None:
    """A citizen applies and pays on node A; the sandbox channel calls node B
    back; the payments pool applies it, the deliveries pool sends the signed
    events (the first try refused, retried after a countdown); the department
    reports progress on node B; the citizen reads it on node A. A star-code
    issued on one node verifies on the other, and only once per scanner."""
    department = DepartmentFactory(code="gaj", name="长沙市公安局")
    ServiceFactory(code="id-card-renew", department=department, fee_fen=2000)
    citizen = CitizenFactory(verified=True, phone="13800138000")
    citizen_auth = {"Authorization": f"Bearer {RefreshToken.for_user(citizen).access_token}"}
    _key, integrator = api_key_create(department=department, scope="integrator")
    _key, scanner = api_key_create(department=department, scope="scanner")
    port_a, port_b = free_port(), free_port()
    node_a, node_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    broker_setting, broker_url = broker
    env = {
        **FAST,
        **PAYMENTS_FAST,
        "PAYMENTS_NOTIFY_BASE_URL": node_b,
        "CELERY_BROKER_URL": broker_setting,
    }
    tag = uuid.uuid4().hex[:8]
    names = {pool: f"{pool}-{tag}" for pool in POOLS}

    server = DepartmentServer().__enter__()
    try:
        _endpoint, secret = endpoints.endpoint_create(
            department=department,
            url=server.url("/gaj/events"),
            events=list(events.SUBSCRIBABLE),
            actor=None,
        )
        server.answer(Answer(500, {"error": "maintenance"}))  # the first try: retried later

        def department_system(received) -> None:
            payload = received.verified(secret)  # standardwebhooks, or it raises
            if payload["type"] != events.APPLICATION_SUBMITTED or received is server.received[0]:
                return  # the refused try is not taken
            number = payload["data"]["application"]["number"]

            def report() -> None:
                dept_auth = {"Authorization": f"Api-Key {integrator}"}
                case = f"{node_b}/api/v1/dept/applications/{number}/"
                # Once our answer is on record (routed), so the timeline reads in order.
                wait_for(
                    lambda: (
                        httpx.get(case, headers=dept_auth, timeout=10).json()["status"] == "routed"
                    ),
                    timeout=30,
                )
                for status in ("accepted", "completed"):
                    httpx.post(
                        f"{case}status/",
                        json={"status": status, "note": f"部门：{status}"},
                        headers=dept_auth,
                        timeout=10,
                    ).raise_for_status()

            threading.Thread(target=report, daemon=True).start()

        server.on_request = department_system

        with ExitStack() as stack:
            stack.enter_context(
                web_server(port=port_a, workers=1, log=tmp_path / "node-a.log", **env)
            )
            stack.enter_context(
                web_server(port=port_b, workers=1, log=tmp_path / "node-b.log", **env)
            )
            logs = {pool: tmp_path / f"{pool}.log" for pool in POOLS}
            for pool, queues in POOLS.items():
                beat = (
                    ["-B", "--scheduler", "celery.beat:PersistentScheduler"]
                    + ["-s", str(tmp_path / "beat")]
                    if pool == "default"
                    else []
                )
                stack.enter_context(
                    celery_worker(
                        "-Q",
                        ",".join(queues),
                        "-n",
                        f"{names[pool]}@%h",
                        "--concurrency",
                        "1",
                        *beat,
                        log=logs[pool],
                        **env,
                    )
                )
            a = stack.enter_context(httpx.Client(base_url=node_a, timeout=10))
            b = stack.enter_context(httpx.Client(base_url=node_b, timeout=10))

            # Each pool consumes its queues and nothing else.
            host = socket.gethostname()
            consumed = active_queues(broker_url, [f"{name}@{host}" for name in names.values()])
            assert consumed == {
                f"{names[pool]}@{host}": sorted(queues) for pool, queues in POOLS.items()
            }

            # Node A: apply, open an order, pay in the sandbox wallet.
            application = a.post(
                "/api/v1/applications/",
                json={"service": "id-card-renew", "form": FORM},
                headers=citizen_auth,
            ).json()
            assert application["status"] == "awaiting_payment", application
            order = a.post(
                "/api/v1/payments/",
                json={"application": application["id"], "channel": "wechat"},
                headers={**citizen_auth, "Idempotency-Key": f"pay-{tag}"},
            ).json()
            assert order["amount_fen"] == 2000, order
            paying = a.post(
                f"/api/v1/sandbox/payments/{order['order_no']}/pay/",
                json={"result": "success"},
                headers=citizen_auth,
            )
            assert paying.status_code == 202, paying.text

            # Node A again: the citizen reads what node B was told.
            def timeline() -> list[str]:
                shown = a.get(f"/api/v1/applications/{application['id']}/", headers=citizen_auth)
                return [entry["status"] for entry in shown.json()["timeline"]]

            wait_for(
                lambda: timeline()[-1:] == ["completed"],
                timeout=90,
                message=f"timeline: {timeline()}",
            )
            steps = timeline()
            assert [s for s in steps if s != "awaiting_payment"] == [
                "submitted",
                "routed",
                "accepted",
                "completed",
            ], steps
            paid = a.get(f"/api/v1/payments/{order['id']}/", headers=citizen_auth).json()
            assert paid["status"] == "paid"

            # The department got each event signed, once per webhook-id, the
            # refused one again under the same id.
            wait_for(lambda: server.of_type(events.PAYMENT_SUCCEEDED), timeout=30)
            submitted = server.of_type(events.APPLICATION_SUBMITTED)
            assert {r.verified(secret)["data"]["application"]["number"] for r in submitted} == {
                application["number"]
            }
            succeeded = server.of_type(events.PAYMENT_SUCCEEDED)
            assert {r.verified(secret)["data"]["payment"]["order_no"] for r in succeeded} == {
                order["order_no"]
            }
            assert len(server.received) == 3  # two events, one of them tried twice
            assert len({r.headers["webhook-id"] for r in server.received}) == 2
            assert sorted(Delivery.objects.values_list("status", "attempt_count")) == [
                ("succeeded", 1),
                ("succeeded", 2),
            ]

            # A star-code issued on one node verifies on the other; the
            # second scan of the same code by the same scanner, on either
            # node, is a replay (the nodes share what was seen through Redis).
            scanner_auth = {"Authorization": f"Api-Key {scanner}"}
            for issuer, verifier in ((a, b), (b, a)):
                code = issuer.get("/api/v1/me/star-code/", headers=citizen_auth).json()["code"]
                first = verifier.post(
                    "/api/v1/qr/verify/", json={"code": code}, headers=scanner_auth
                )
                assert first.json()["valid"] is True, first.text
                again = issuer.post("/api/v1/qr/verify/", json={"code": code}, headers=scanner_auth)
                assert again.json() == {"valid": False, "reason": "replayed"}, again.text
            # The default pool (beat's flushes) moves the scans to PostgreSQL.
            wait_for(lambda: ScanEvent.objects.count() == 4, timeout=30)

        # The pools took their tasks from the broker asked for.
        scheme = broker_url.split("://", 1)[0]
        assert all(f"Connected to {scheme}://" in log.read_text() for log in logs.values())
        # Every task went to the pool of its queue.
        received = {pool: tasks_received(log) for pool, log in logs.items()}
        assert received["deliveries"] and received["deliveries"] <= {
            "routing.deliver",
            "routing.deliver_due",
        }, received
        assert {"payments.sandbox_notify", "payments.notifies_apply"} <= received["payments"]
        assert all(name.startswith("payments.") for name in received["payments"]), received
        assert not any(
            name.startswith(("payments.", "routing.deliver")) for name in received["default"]
        ), received
    finally:
        server.__exit__(None, None, None)
    assert Application.objects.get(pk=application["id"]).status == "completed"


@pytest.mark.integration
def test_rabbitmq_holds_a_waiting_task_longer_than_any_wait_we_give_it(settings) -> None:
    """A task with a countdown stays unacknowledged with its worker until it
    has run; RabbitMQ closes a consumer that holds one past its
    consumer_timeout (the messages go back to the queue, to run again)."""
    rabbitmq_or_fail()
    answer = rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).")
    assert answer.returncode == 0, answer.stderr
    found = re.search(r"\{ok,(\d+)\}", answer.stdout)
    if found is None:
        assert answer.stdout.strip() == "undefined", answer.stdout  # no timeout at all
        return
    longest_task = settings.ROUTING_BATCH_BUDGET_SECONDS + settings.ROUTING_LEASE_SECONDS
    assert settings.CELERY_MAX_COUNTDOWN + longest_task < int(found[1]) / 1000


# --- IPv6 ------------------------------------------------------------------------------------


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(240)
def test_a_citizen_applies_and_a_scanner_verifies_over_ipv6(tmp_path) -> None:
    department = DepartmentFactory(code="hrss", name="长沙市人力资源和社会保障局")
    ServiceFactory(code="sbk-apply", department=department)
    citizen = CitizenFactory(verified=True, phone="13800138000")
    citizen_auth = {"Authorization": f"Bearer {RefreshToken.for_user(citizen).access_token}"}
    _key, scanner = api_key_create(department=department, scope="scanner")
    # As production would name them: the IPv6 literal in brackets.
    with make_run(tmp_path, ALLOWED_HOSTS="127.0.0.1,[::1]") as (base, log):
        port = int(base.rsplit(":", 1)[1])
        v6 = f"http://[::1]:{port}"
        wait_for(lambda: answers(f"{v6}/readyz"), timeout=60, message="no answer on [::1]")
        output = log.read_text()
        assert f"Also over IPv6         {v6}/" in output
        listening = re.search(
            r"listening on http://127\.0\.0\.1:(\d+)/<code>/events and http://\[::1\]:(\d+)/",
            output,
        )
        assert listening and listening[1] == listening[2], output
        stub_port = int(listening[2])

        with httpx.Client(base_url=v6, timeout=10) as client:
            # The client address of an IPv6 peer is recorded as such.
            sent = client.post("/api/v1/auth/otp/", json={"phone": "13900139000"})
            assert sent.status_code == 202, sent.text
            assert OtpChallenge.objects.get(phone="13900139000").ip == "::1"

            created = client.post(
                "/api/v1/applications/",
                json={"service": "sbk-apply", "form": FORM},
                headers=citizen_auth,
            )
            assert created.status_code == 201, created.text
            application = created.json()

            code = client.get("/api/v1/me/star-code/", headers=citizen_auth).json()["code"]
            verified = client.post(
                "/api/v1/qr/verify/",
                json={"code": code},
                headers={"Authorization": f"Api-Key {scanner}"},
            )
            assert verified.status_code == 200, verified.text
            assert verified.json()["valid"] is True, verified.text
            assert verified.json()["subject"]["identity_level"] == 2

            # The demo department takes it and reports back; the citizen reads it over IPv6.
            def status() -> str:
                shown = client.get(
                    f"/api/v1/applications/{application['id']}/", headers=citizen_auth
                )
                return shown.json()["status"]

            wait_for(lambda: status() == "completed", timeout=60, message=status())

            # A host the deployment does not name is refused, over IPv6 too.
            stranger = client.get("/api/v1/services/", headers={"Host": f"[::2]:{port}"})
            assert stranger.status_code == 400

        # The demo department answers on ::1 as well (and checks signatures there too).
        unsigned = httpx.post(
            f"http://[::1]:{stub_port}/hrss/events", json={"type": "ping"}, timeout=5
        )
        assert unsigned.status_code == 401


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(240)
def test_on_rabbitmq_a_worker_killed_mid_task_hands_its_message_to_the_next(tmp_path) -> None:
    """Tasks are acknowledged late: RabbitMQ gives the message a killed
    worker held to the next worker at once. The delivery is still under the
    dead worker's lease then; once the lease has run out the next worker's
    sweeper sends it. The department sees one event under one webhook-id,
    however often it came."""
    department = DepartmentFactory(code="hrss", name="长沙市人力资源和社会保障局")
    ServiceFactory(code="sbk-apply", department=department)
    citizen = CitizenFactory(verified=True, phone="13800138000")
    citizen_auth = {"Authorization": f"Bearer {RefreshToken.for_user(citizen).access_token}"}
    with rabbitmq_vhost() as url, DepartmentServer() as server:
        _endpoint, secret = endpoints.endpoint_create(
            department=department,
            url=server.url("/hrss/events"),
            events=[events.APPLICATION_SUBMITTED],
            actor=None,
        )
        first_request = threading.Event()
        server.on_request = lambda received: first_request.set()
        server.answer(Answer(200, {"reference": "slow"}, delay=8))  # the doomed worker waits here
        env = {**FAST, "CELERY_BROKER_URL": url}
        with web_server(workers=1, **env) as base:
            with routing_worker(tmp_path, "doomed", **env) as doomed:
                created = httpx.post(
                    f"{base}/api/v1/applications/",
                    json={"service": "sbk-apply", "form": FORM},
                    headers=citizen_auth,
                    timeout=10,
                )
                assert created.status_code == 201, created.text
                assert first_request.wait(30), "the doomed worker never started the delivery"
                held = re.findall(
                    r"Task routing\.deliver_due\[([0-9a-f-]+)\] received", doomed.log.read_text()
                )
                assert held, doomed.log.read_text()
                os.killpg(doomed.pid, signal.SIGKILL)
                doomed.wait()
            with routing_worker(tmp_path, "heir", **env) as heir:
                wait_for(
                    lambda: Delivery.objects.get().status == "succeeded",
                    timeout=60,
                    message=str(Delivery.objects.values_list("status", "attempt_count").get()),
                )
                # The very message the doomed worker held, back from RabbitMQ.
                assert held[-1] in heir.log.read_text()
        received = server.of_type(events.APPLICATION_SUBMITTED)
    assert len(received) == 2  # the one cut off, and the heir's
    assert len({r.headers["webhook-id"] for r in received}) == 1
    assert all(r.verified(secret) for r in received)
    assert Application.objects.get(pk=created.json()["id"]).status == "routed"
