"""``scripts/run_all.py`` (behind ``make run``): what it shows of the text
messages it has the web process write to a file."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from types import ModuleType

import pytest

from tests.processes import ROOT, wait_for


def run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "scripts" / "run_all.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sms_line(to: str, text: str) -> str:
    return json.dumps({"to": to, "text": text, "sent_at": "2026-12-06T17:00:00+08:00"}) + "\n"


@pytest.fixture
def shown(tmp_path, capsys):
    """Follows ``tmp_path/var/sms.jsonl``; yields the file and what was printed so far."""
    path = tmp_path / "var" / "sms.jsonl"
    path.parent.mkdir()
    path.write_text(sms_line("13900139000", "an old message"), encoding="utf-8")
    stopping, started = threading.Event(), threading.Event()
    follower = threading.Thread(
        target=run_all().follow_sms, args=(path, stopping, started), daemon=True
    )
    follower.start()
    assert started.wait(timeout=5)  # it has taken the file's end
    printed: list[str] = []

    def output() -> str:
        printed.append(capsys.readouterr().out)
        return "".join(printed)

    yield path, output
    stopping.set()
    follower.join(timeout=5)


def test_each_new_message_is_shown_with_its_phone(shown) -> None:
    path, output = shown
    with path.open("a", encoding="utf-8") as handle:
        handle.write(sms_line("13800138000", "您的登录验证码是 123456"))
    wait_for(lambda: "验证码" in output(), timeout=5)
    assert output() == "    sms | to 13800138000: 您的登录验证码是 123456\n"  # not the old one


def test_a_line_still_being_written_waits_for_its_end(shown) -> None:
    path, output = shown
    line = sms_line("13800138000", "您的登录验证码是 654321")
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line[:20])
        handle.flush()
        time.sleep(1)
        assert output() == ""
        handle.write(line[20:])
    wait_for(lambda: "654321" in output(), timeout=5)


def test_a_truncated_file_is_read_from_its_start(shown) -> None:
    path, output = shown
    path.write_text(sms_line("1", "new"), encoding="utf-8")  # shorter than what was there
    wait_for(lambda: "to 1: new" in output(), timeout=5)
