"""``make demo`` (``scripts/demo.py``): the whole story through the public
API, against the system ``make run`` starts, one line per step; and the
keys ``seed_demo`` hands it."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from accounts import idnumber
from accounts.api_keys import api_key_authenticate
from accounts.models import ApiKey, Department
from payments.models import PaymentOrder
from qr.models import ScanEvent, VenueCode
from services.models import Application
from services.routing import endpoints, events
from tests.processes import ROOT, celery_worker, free_port, make_run, wait_for, web_server

STEPS = [
    "system up",
    "login by SMS code",
    "real-name verification",
    "catalog search",
    "service guide",
    "application submitted",
    "paid in the payment sandbox",
    "routed to the department",
    "department completed it",
    "citizen rated it",
    "star-code issued",
    "star-code verified by a scanner",
    "star-code verified offline (JWKS)",
    "venue code resolved",
]


def run_demo(base: str, *, sms: Path, keys: Path, wait: int = 60) -> subprocess.CompletedProcess:
    """``make demo``'s command, with the places a test's system uses."""
    env = {
        **os.environ,
        "DEMO_BASE_URL": base,
        "SMS_FILE_PATH": str(sms),
        "DEMO_KEYS_FILE": str(keys),
        "DEMO_WAIT_SECONDS": str(wait),
    }
    return subprocess.run(
        [sys.executable, "scripts/demo.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=wait * 4 + 60,
    )


def step_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line[:1] in ("✓", "✗")]


def seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    keys = tmp_path / "var" / "demo-keys.json"
    monkeypatch.setenv("DEMO_KEYS_FILE", str(keys))
    call_command("seed_demo", stdout=StringIO())
    return keys


def demo_script():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_citizens_id_numbers_pass_the_identity_sandbox() -> None:
    make = demo_script().id_number
    for _ in range(500):
        number = make()
        assert idnumber.validate(number) == number  # checksum and birth date
        assert number[14:17] != "999"  # what the sandbox provider refuses


@pytest.mark.django_db
def test_the_demo_checks_a_star_code_offline_as_a_terminal_would(api, citizen) -> None:
    from qr.star_codes import star_code_issue

    demo = demo_script()
    keys = api.get("/api/v1/qr/keys/").json()
    code = star_code_issue(user=citizen).code
    assert demo.verify_offline(code, keys)["sub"] == citizen.subject

    header, claims, signature = code.removeprefix("MCS1:").split(".")
    forged = f"MCS1:{header}.{claims[:-2]}{'AA' if claims[-2:] != 'AA' else 'BB'}.{signature}"
    with pytest.raises(demo.StepFailed, match="does not verify"):
        demo.verify_offline(forged, keys)
    with pytest.raises(demo.StepFailed, match="is not in /api/v1/qr/keys/"):
        demo.verify_offline(code, {"keys": []})
    with pytest.raises(demo.StepFailed, match="not 'https://elsewhere.example'"):
        demo.verify_offline(code, keys, issuer="https://elsewhere.example")


# -- the keys seed_demo hands the demo -------------------------------------------------------


@pytest.mark.django_db
def test_seed_demo_keeps_the_demo_keys_in_a_file_only_its_owner_reads(
    tmp_path, monkeypatch
) -> None:
    keys_file = seed(tmp_path, monkeypatch)
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    written = keys_file.read_text(encoding="utf-8")
    keys = {entry["scope"]: entry for entry in json.loads(written)["keys"]}
    integrator = api_key_authenticate(keys["integrator"]["key"])
    scanner = api_key_authenticate(keys["scanner"]["key"])
    assert integrator and integrator.scope == "integrator"
    assert integrator.department.code == "police"  # the demo's service is theirs
    assert scanner and scanner.scope == "scanner"

    # Again: the keys still work, nothing changes.
    call_command("seed_demo", stdout=StringIO())
    assert keys_file.read_text(encoding="utf-8") == written

    # A key revoked meanwhile (in the admin, say) is replaced; the other kept.
    ApiKey.objects.filter(pk=scanner.pk).update(revoked_at=scanner.created_at)
    call_command("seed_demo", stdout=StringIO())
    again = {entry["scope"]: entry for entry in json.loads(keys_file.read_text())["keys"]}
    assert again["integrator"] == keys["integrator"]
    assert again["scanner"]["key"] != keys["scanner"]["key"]
    assert api_key_authenticate(again["scanner"]["key"])
    assert ApiKey.objects.filter(name="make demo", revoked_at=None).count() == 2


@pytest.mark.django_db
def test_seed_demo_writes_keys_only_on_a_laptop(tmp_path, monkeypatch, settings) -> None:
    monkeypatch.delenv("DEMO_KEYS_FILE", raising=False)
    settings.VAR_DIR = tmp_path
    settings.DEBUG = False
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert not (tmp_path / "demo-keys.json").exists()
    assert not ApiKey.objects.filter(name="make demo").exists()
    assert "demo-keys" not in out.getvalue()

    settings.DEBUG = True
    call_command("seed_demo", stdout=out)
    assert (tmp_path / "demo-keys.json").exists()
    assert f"make demo's API keys in {tmp_path / 'demo-keys.json'}" in out.getvalue()


# -- the story against the running system ----------------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_make_demo_tells_the_whole_story_against_make_run(tmp_path, monkeypatch) -> None:
    keys = seed(tmp_path, monkeypatch)
    with make_run(tmp_path) as (base, _log):
        run = run_demo(base, sms=tmp_path / "var" / "sms-outbox.jsonl", keys=keys)
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
        lines = step_lines(run.stdout)
        assert [line.split(". ", 1)[1].split(":", 1)[0] for line in lines] == STEPS
        assert all(line.startswith("✓") for line in lines), run.stdout
        assert run.stdout.splitlines()[-1] == f"All {len(STEPS)} steps happened."

        # What the lines say happened, happened.
        application = Application.objects.get(service__code="id-card-renew")
        assert application.status == "completed"
        assert application.rating_score == 5
        assert application.applicant.identity_level == 2
        assert application.number in run.stdout
        assert PaymentOrder.objects.get(application=application).status == "paid"
        assert VenueCode.objects.filter(department__code="police").count() == 1
        wait_for(  # scans reach the database in batches (beat)
            lambda: ScanEvent.objects.filter(valid=True, kind="citizen").exists(),
            timeout=30,
            message="the scanner's verification was not recorded",
        )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_make_demo_names_the_step_that_did_not_happen(tmp_path, monkeypatch) -> None:
    """Web and worker up, the department's system down: paid, never routed."""
    keys = seed(tmp_path, monkeypatch)
    endpoints.endpoint_create(
        department=Department.objects.get(code="police"),
        url=f"http://127.0.0.1:{free_port()}/police/events",  # nobody listens
        events=list(events.SUBSCRIBABLE),
        description="the police department's system, down",
        actor=None,
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sms = tmp_path / "sms.jsonl"
    edges = {"SMS_BACKEND": "file", "SMS_FILE_PATH": str(sms), "PAYMENTS_NOTIFY_BASE_URL": base}
    with web_server(port=port, **edges), celery_worker(**edges):
        run = run_demo(base, sms=sms, keys=keys, wait=8)
    assert run.returncode == 1, run.stdout
    lines = step_lines(run.stdout)
    assert all(line.startswith("✓") for line in lines[:7]), run.stdout
    assert lines[7].startswith("✗  8. routed to the department: the application routed to police")
    assert "not within 8 s" in lines[7]
    assert len(lines) == 8  # nothing after the step that did not happen
    assert "last seen: awaiting_payment → submitted" in run.stdout
    assert run.stdout.splitlines()[-1] == "The demo stopped at step 8 (routed to the department)."
