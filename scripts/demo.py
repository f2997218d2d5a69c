"""The whole story of My Changsha, told through its public API against a
running ``make run`` (``make demo``).

A new citizen logs in with the SMS code the running system wrote to its
text-message file, verifies their real name, finds a fee-bearing service,
reads its guide, applies, pays at the WeChat Pay sandbox, and follows the
application to the demo department, which accepts and completes it; the
citizen rates it; a metro gate's scanner key verifies the citizen's
star-code online, and the code is verified offline against the published
keys; the department puts up a venue code and the app resolves it.

Every step prints one line, ``✓`` or ``✗``; the first step that does not
happen stops the demo with exit status 1 and says why. Waits for what the
system does in the background (the payment callback, routing, the
department's progress) are bounded by ``DEMO_WAIT_SECONDS``.

Environment: ``DEMO_BASE_URL`` (http://127.0.0.1:8000), ``SMS_FILE_PATH``
(var/sms-outbox.jsonl, where ``make run`` has the login codes written),
``DEMO_KEYS_FILE`` (var/demo-keys.json: the department's integrator key and
the scanner key, which ``manage.py seed_demo`` writes there on a laptop),
``DEMO_WAIT_SECONDS`` (60), ``DEMO_QR_ISSUER`` (the platform's ``QR_ISSUER``,
https://my.changsha.gov.cn).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "id-card-renew"  # 居民身份证换领: fee-bearing, the police department's
SEARCH = "sfz"  # pinyin initials of 身份证
FORM = {"reason": "有效期满", "delivery": "窗口领取"}
CHANNEL = "wechat"
REAL_NAME = "刘星"
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


class StepFailed(Exception):
    """The step did not happen; the message says what was seen instead."""


def id_number() -> str:
    """A fictional resident ID number of Changsha (芙蓉区) with a valid GB 11643
    checksum, never one the identity sandbox refuses (sequence ``999``)."""
    born = dt.date(1970, 1, 1) + dt.timedelta(days=random.randrange(365 * 35))
    first17 = f"430102{born:%Y%m%d}{random.randrange(1, 999):03d}"
    weighted = sum(int(digit) * weight for digit, weight in zip(first17, ID_WEIGHTS, strict=True))
    return first17 + ID_CHECK[weighted % 11]


def phone_number() -> str:
    """A new demo citizen each run: no resend wait, no earlier applications."""
    return f"139{random.randrange(10**8):08d}"


class Api:
    """The public API over HTTP: every answer is checked against the status
    the step expects, and anything else becomes the step's failure."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = httpx.Client(timeout=15, headers={"Accept-Language": "zh-hans"})

    def call(
        self,
        method: str,
        path: str,
        *,
        expect: int | tuple[int, ...] = 200,
        token: str | None = None,
        key: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if key:
            sent["Authorization"] = f"Api-Key {key}"
        url = path if path.startswith("http") else f"{self.base}{path}"
        try:
            response = self.http.request(method, url, json=body, headers=sent, params=params)
        except httpx.HTTPError as exc:
            raise StepFailed(f"{method} {path}: no answer from {self.base} ({exc})") from exc
        expected = expect if isinstance(expect, tuple) else (expect,)
        if response.status_code not in expected:
            raise StepFailed(
                f"{method} {path} answered {response.status_code}: {problem(response)}"
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise StepFailed(f"{method} {path} answered something else than JSON") from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.call("POST", path, body=body, **kwargs)


def problem(response: httpx.Response) -> str:
    """The problem details' code and detail, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and ("code" in body or "detail" in body):
        return f"{body.get('code', '')} {body.get('detail', '')}".strip()
    return json.dumps(body, ensure_ascii=False)[:200]


def wait_until(
    look: Callable[[], Any], done: Callable[[Any], bool], *, seconds: float, waiting_for: str
) -> Any:
    """Polls ``look()`` until ``done`` holds of what it returns; the last thing
    seen goes into the failure after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        seen = look()
        if done(seen):
            return seen
        if time.monotonic() > deadline:
            raise StepFailed(f"{waiting_for}: not within {seconds:g} s", seen)
        time.sleep(0.5)


class Story:
    """The steps, in order; each returns the line it prints after ✓."""

    def __init__(self, *, base: str, sms_file: Path, keys_file: Path, wait: float) -> None:
        self.api = Api(base)
        self.sms_file, self.keys_file, self.wait = sms_file, keys_file, wait
        self.phone = phone_number()
        self.state: dict[str, Any] = {}

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("system up", self.system_up),
            ("login by SMS code", self.login),
            ("real-name verification", self.real_name),
            ("catalog search", self.search),
            ("service guide", self.guide),
            ("application submitted", self.apply),
            ("paid in the payment sandbox", self.pay),
            ("routed to the department", self.routed),
            ("department completed it", self.completed),
            ("citizen rated it", self.rate),
            ("star-code issued", self.star_code),
            ("star-code verified by a scanner", self.verify_online),
            ("star-code verified offline (JWKS)", self.verify_offline),
            ("venue code resolved", self.venue_code),
        ]

    # -- the citizen comes in ------------------------------------------------

    def system_up(self) -> str:
        try:
            self.api.get("/readyz")
        except StepFailed as failure:
            raise StepFailed(f"{failure} (start it with `make run`; DEMO_BASE_URL)") from failure
        return f"{self.api.base} is ready (database and broker)"

    def login(self) -> str:
        sent_from = self.sms_file.stat().st_size if self.sms_file.exists() else 0
        self.api.post("/api/v1/auth/otp/", {"phone": self.phone}, expect=202)
        code = wait_until(
            lambda: self.sms_code(sent_from),
            bool,
            seconds=min(self.wait, 15),
            waiting_for=f"a text message to {self.phone} in {self.sms_file} "
            "(make run has them written there: SMS_BACKEND=file, SMS_FILE_PATH)",
        )
        tokens = self.api.post("/api/v1/auth/token/", {"phone": self.phone, "code": code})
        self.state["access"] = tokens["access"]
        return f"{self.phone} logged in with code {code}, read from {self.shown(self.sms_file)}"

    def sms_code(self, sent_from: int) -> str | None:
        """The login code of the newest message to our phone after ``sent_from``."""
        try:
            with self.sms_file.open("rb") as handle:
                handle.seek(sent_from)
                lines = handle.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a line still being written
            found = re.search(r"\d{6}", str(message.get("text", "")))
            if message.get("to") == self.phone and found:
                return found[0]
        return None

    def real_name(self) -> str:
        token = self.state["access"]
        number = id_number()
        self.api.post(
            "/api/v1/me/real-name/", {"name": REAL_NAME, "id_number": number}, token=token
        )
        me = self.api.get("/api/v1/me/", token=token)
        if me["identity_level"] != 2:
            raise StepFailed(f"identity level {me['identity_level']} after verification, not 2")
        return f"{me['real_name']} {me['id_number']}: identity level 2 (sandbox identity provider)"

    # -- finds a service and applies ----------------------------------------

    def search(self) -> str:
        found = self.api.get("/api/v1/services/", params={"q": SEARCH})
        codes = [service["code"] for service in found["results"]]
        if SERVICE not in codes:
            raise StepFailed(f"searching {SEARCH!r} found {codes}, not {SERVICE}")
        return f"'{SEARCH}' finds {', '.join(codes)}"

    def guide(self) -> str:
        guide = self.api.get(f"/api/v1/services/{SERVICE}/")
        if not guide["fee_fen"]:
            raise StepFailed(f"{SERVICE} is free; the demo needs a fee-bearing service")
        self.state["guide"] = guide
        return (
            f"{guide['name']} ({guide['department']}): fee {yuan(guide['fee_fen'])}, "
            f"{len(guide['materials'])} materials, done in {guide['time_limit_days']} working days"
        )

    def apply(self) -> str:
        application = self.api.post(
            "/api/v1/applications/",
            {"service": SERVICE, "form": {**FORM, "phone": self.phone}},
            token=self.state["access"],
            headers={"Idempotency-Key": str(uuid.uuid4())},
            expect=201,
        )
        if application["status"] != "awaiting_payment":
            raise StepFailed(f"a fee-bearing application starts {application['status']!r}")
        self.state["application"] = application
        return f"{application['number']}, awaiting payment"

    def pay(self) -> str:
        token, application = self.state["access"], self.state["application"]
        order = self.api.post(
            "/api/v1/payments/",
            {"application": application["id"], "channel": CHANNEL},
            token=token,
            headers={"Idempotency-Key": str(uuid.uuid4())},
            expect=201,
        )
        # The citizen pays in the channel's sandbox wallet; the channel then
        # calls the platform back, signed, from a worker.
        self.api.post(
            f"/api/v1/sandbox/payments/{order['order_no']}/pay/",
            {"result": "success"},
            token=token,
            expect=(200, 202),
        )
        paid = wait_until(
            lambda: self.api.get(f"/api/v1/payments/{order['id']}/", token=token),
            lambda seen: seen["status"] == "paid",
            seconds=self.wait,
            waiting_for=f"order {order['order_no']} paid (the sandbox channel's callback, "
            "sent by the worker)",
        )
        return f"order {paid['order_no']}: {yuan(paid['amount_fen'])} by {CHANNEL}, paid"

    # -- the department's side ----------------------------------------------

    def application(self) -> dict[str, Any]:
        return self.api.get(
            f"/api/v1/applications/{self.state['application']['id']}/", token=self.state["access"]
        )

    def routed(self) -> str:
        department = self.state["guide"]["department"]
        application = wait_until(
            self.application,
            lambda seen: "routed" in steps_of(seen),
            seconds=self.wait,
            waiting_for=f"the application routed to {department} (its endpoint answering "
            "application.submitted: is make run's 'dept' process up?)",
        )
        return f"{department}'s system took it: {' → '.join(steps_of(application))}"

    def completed(self) -> str:
        application = wait_until(
            self.application,
            lambda seen: seen["status"] in ("completed", "rejected"),
            seconds=self.wait,
            waiting_for="the department accepting and completing it",
        )
        if application["status"] != "completed":
            raise StepFailed(f"the department moved it to {application['status']!r}")
        number = application["number"]
        seen = self.api.get(f"/api/v1/dept/applications/{number}/", key=self.key("integrator"))
        if seen["status"] != "completed":
            raise StepFailed(f"the department API shows {number} {seen['status']!r}")
        reference = f", its reference {seen['reference']}" if seen.get("reference") else ""
        return (
            f"accepted → completed by {self.state['guide']['department']}{reference}; "
            f"its API (integrator key) shows {number} completed"
        )

    def rate(self) -> str:
        self.api.post(
            f"/api/v1/applications/{self.state['application']['id']}/rating/",
            {"score": 5, "comment": "办理很快，一次都没跑"},
            token=self.state["access"],
            expect=(200, 201),
        )
        return "5 stars (好评)"

    # -- the star-code -------------------------------------------------------

    def star_code(self) -> str:
        issued = self.api.get("/api/v1/me/star-code/", token=self.state["access"])
        if not issued["code"].startswith("MCS1:"):
            raise StepFailed(f"not a star-code: {issued['code'][:40]}")
        self.state["star_code"] = issued["code"]
        return f"{issued['code'][:24]}… valid until {issued['expires_at']}"

    def verify_online(self) -> str:
        answer = self.api.post(
            "/api/v1/qr/verify/", {"code": self.state["star_code"]}, key=self.key("scanner")
        )
        if not answer.get("valid"):
            raise StepFailed(f"the scanner was told: {answer.get('reason')}")
        subject = answer["subject"]
        if answer["kind"] != "citizen" or subject["identity_level"] != 2:
            raise StepFailed(f"valid, but as {answer}")
        self.state["subject"] = subject["id"]
        return f"valid: citizen {subject['id']}, identity level {subject['identity_level']}"

    def verify_offline(self) -> str:
        keys = self.api.get("/api/v1/qr/keys/")
        claims = verify_offline(self.state["star_code"], keys)
        if claims.get("sub") != self.state["subject"]:
            raise StepFailed(
                f"the code's subject {claims.get('sub')} is not the one verified online"
            )
        return (
            f"EdDSA signature checks with key {claims['kid']} of {len(keys['keys'])} "
            f"in /api/v1/qr/keys/; expires in {claims['exp'] - int(time.time())} s"
        )

    def venue_code(self) -> str:
        venue = self.api.post(
            "/api/v1/dept/codes/",
            {
                "service": SERVICE,
                "label": "芙蓉区政务服务中心 3 号窗口",
                "location": "长沙市芙蓉区",
            },
            key=self.key("integrator"),
            expect=201,
        )
        resolved = self.api.post("/api/v1/qr/resolve/", {"code": venue["code"]})
        if resolved.get("kind") != "venue" or resolved["service"]["code"] != SERVICE:
            raise StepFailed(f"resolved as {resolved}")
        return f"'{resolved['label']}' opens {resolved['service']['name']} ({SERVICE})"

    # -- helpers -------------------------------------------------------------

    def key(self, scope: str) -> str:
        """The demo's API key of ``scope`` (seed_demo wrote them on this machine)."""
        hint = "run `make seed` (seed_demo writes them on a laptop, DEBUG=1)"
        try:
            keys = json.loads(self.keys_file.read_text(encoding="utf-8"))["keys"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StepFailed(f"no demo keys in {self.shown(self.keys_file)}: {hint}") from exc
        for entry in keys:
            if entry.get("scope") == scope:
                return str(entry["key"])
        raise StepFailed(f"no {scope} key in {self.shown(self.keys_file)}: {hint}")

    @staticmethod
    def shown(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(ROOT))
        except ValueError:
            return str(path)


def steps_of(application: dict[str, Any]) -> list[str]:
    return [entry["status"] for entry in application["timeline"]]


def yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"


def verify_offline(text: str, keys: dict[str, Any], issuer: str | None = None) -> dict[str, Any]:
    """A scanner terminal's own check (docs/scanners.md): the signature with the
    published key the header names, then the issuer (``DEMO_QR_ISSUER``, the
    platform's ``QR_ISSUER``), the kind and the validity period."""
    issuer = issuer or os.environ.get("DEMO_QR_ISSUER") or "https://my.changsha.gov.cn"
    if not text.startswith("MCS1:"):
        raise StepFailed("no MCS1: prefix")
    token = jws.JWS()
    try:
        token.deserialize(text[len("MCS1:") :])
        kid = token.jose_header.get("kid")
        key = jwk.JWKSet.from_json(json.dumps(keys)).get_key(kid)
        if key is None:
            raise StepFailed(f"its key {kid} is not in /api/v1/qr/keys/")
        token.verify(key, alg="EdDSA")
        claims = json.loads(token.payload)
    except (JWException, ValueError) as exc:
        raise StepFailed(f"the signature does not verify: {exc}") from exc
    now = time.time()
    if claims.get("iss") != issuer:
        raise StepFailed(f"issued by {claims.get('iss')!r}, not {issuer!r}")
    if claims.get("knd") != "citizen" or not isinstance(claims.get("exp"), int):
        raise StepFailed(f"not a citizen's code: {claims}")
    if not claims["iat"] - 15 <= now < claims["exp"] + 15:
        raise StepFailed(f"outside its validity period: {claims}")
    return {**claims, "kid": kid}


def main(out: TextIO = sys.stdout) -> int:
    # An empty variable means its default (not the current directory).
    base = os.environ.get("DEMO_BASE_URL") or "http://127.0.0.1:8000"
    story = Story(
        base=base,
        sms_file=Path(os.environ.get("SMS_FILE_PATH") or ROOT / "var" / "sms-outbox.jsonl"),
        keys_file=Path(os.environ.get("DEMO_KEYS_FILE") or ROOT / "var" / "demo-keys.json"),
        wait=float(os.environ.get("DEMO_WAIT_SECONDS") or "60"),
    )
    print(f"My Changsha, the whole story, against {base}", file=out, flush=True)
    steps = story.steps()
    for number, (title, step) in enumerate(steps, 1):
        try:
            try:
                said = step()
            except (KeyError, TypeError, IndexError) as exc:
                raise StepFailed(f"an answer without what the API promises ({exc!r})") from exc
        except StepFailed as failure:
            reason, *seen = failure.args
            print(f"✗ {number:>2}. {title}: {reason}", file=out, flush=True)
            if seen and isinstance(seen[0], dict) and "timeline" in seen[0]:
                print(f"       last seen: {' → '.join(steps_of(seen[0]))}", file=out)
            elif seen:
                print(f"       last seen: {json.dumps(seen[0], ensure_ascii=False)}", file=out)
            print(f"The demo stopped at step {number} ({title}).", file=out, flush=True)
            return 1
        print(f"✓ {number:>2}. {title}: {said}", file=out, flush=True)
    print(f"All {len(steps)} steps happened.", file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
