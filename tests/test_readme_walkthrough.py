"""The README's curl walkthrough, run by bash as a reader pastes it, against
what ``make run`` starts (``scripts/run_all.py``: gunicorn, a Celery worker
and beat, the demo department backend) on the demo data.

The one change to the block is its first line, the server's address: the
test's server listens on a free port, not on 8000.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from django.core.management import call_command

from services.models import Application
from tests.processes import ROOT, make_run, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
]

README_BASE = "B=http://127.0.0.1:8000\n"


def walkthrough() -> str:
    """The shell block of the README's Quick start that logs in."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", quick_start, re.S) if "auth/otp/" in b]
    assert len(blocks) == 1, "one walkthrough block in Quick start"
    return blocks[0]


def json_documents(output: str) -> list[Any]:
    """What the block printed: JSON bodies one after another, as curl -s leaves them."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while position < len(output):
        if output[position].isspace():
            position += 1
            continue
        document, position = decoder.raw_decode(output, position)
        documents.append(document)
    return documents


def test_the_readme_walkthrough_runs_as_pasted(tmp_path) -> None:
    script = walkthrough()
    assert script.startswith(README_BASE)
    call_command("seed_demo", verbosity=0)
    sms = tmp_path / "var" / "sms-outbox.jsonl"
    with make_run(tmp_path) as (base, output):
        run = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", f"B={base}\n" + script[len(README_BASE) :]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, f"{run.stderr}\n{run.stdout}"
        assert run.stderr == ""

        otp, found, guide, application, messages, star_code = json_documents(run.stdout)

        # The code was sent, to the file the block read it from.
        assert otp["resend_after"] == 60
        [sent] = [json.loads(line) for line in sms.read_text(encoding="utf-8").splitlines()]
        assert sent["to"] == "13800138000"

        assert "sbk-apply" in [service["code"] for service in found["results"]]
        assert guide["code"] == "sbk-apply"
        assert guide["form_schema"]["type"] == "object"

        # The application as the block saw it after its pause, on its way.
        assert application["service"] == "sbk-apply"
        steps = [step["status"] for step in application["timeline"]]
        assert steps == ["submitted", "routed", "accepted", "completed"][: len(steps)]
        assert len(steps) >= 2, steps
        assert messages["results"], "the citizen has messages"

        assert star_code["code"].startswith("MCS1:")
        assert star_code["refresh_after"] < star_code["expires_at"]
        assert (tmp_path / "star-code.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

        # And what the README promises next: the department completes it.
        def completed() -> bool:
            return Application.objects.get(pk=application["id"]).status == "completed"

        wait_for(completed, timeout=60, message="the demo department did not complete it")
        # make run showed the code too, for a reader who types it by hand.
        assert f"sms | to 13800138000: {sent['text']}" in output.read_text()
