"""Demo data for a laptop or a staging city: departments, the catalog of
categories and services (``services/demo/catalog.json``, in the operators'
import format), and demo accounts.

Idempotent: running it again changes nothing that is already there. It only
adds what is missing: a department, category or service already stored is
left as the operators and its department keep it (a service taken offline
stays offline, a guide edited stays edited, a name changed stays changed).

On a laptop (``DEBUG``), or wherever ``DEMO_KEYS_FILE`` names a file, it also
keeps the API keys ``make demo`` (``scripts/demo.py``) acts with: an
integrator key of the police department, whose fee-bearing service the demo
applies for, and a scanner key of the transport department (a metro gate).
Keys are stored hashed, so their raw values can only be handed over when they
are made: they go to that file (``var/demo-keys.json`` by default; mode 0600,
readable by its owner only, never printed), and are made again, the old ones
revoked, when the file is missing or its keys no longer work.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.api_keys import api_key_authenticate, api_key_create, api_key_revoke
from accounts.citizens import real_name_verify
from accounts.departments import department_ensure
from accounts.models import ApiKey, ApiKeyScope, Department, IdentityLevel, User
from services.catalog import catalog_import, category_ensure
from services.models import Category

CATALOG_FILE = Path(__file__).resolve().parents[2] / "demo" / "catalog.json"

# Changsha's departments that own the demo catalog.
DEPARTMENTS = [
    (
        "hrss",
        "长沙市人力资源和社会保障局",
        "Changsha Human Resources and Social Security Bureau",
        "12333",
    ),
    ("medicare", "长沙市医疗保障局", "Changsha Healthcare Security Administration", "0731-12393"),
    ("hpf", "长沙住房公积金管理中心", "Changsha Housing Provident Fund Management Center", "12329"),
    ("police", "长沙市公安局", "Changsha Public Security Bureau", "0731-82587110"),
    ("transport", "长沙市交通运输局", "Changsha Transport Bureau", "12328"),
    ("education", "长沙市教育局", "Changsha Education Bureau", "0731-88665000"),
    (
        "housing",
        "长沙市住房和城乡建设局",
        "Changsha Housing and Urban-Rural Development Bureau",
        "0731-88665700",
    ),
    (
        "culture",
        "长沙市文化旅游广电局",
        "Changsha Culture, Tourism, Radio and TV Bureau",
        "0731-88665500",
    ),
    ("market", "长沙市市场监督管理局", "Changsha Administration for Market Regulation", "12315"),
    ("civil", "长沙市民政局", "Changsha Civil Affairs Bureau", "0731-88665800"),
]

DEMO_PHONE = "13800138000"
DEMO_NAME = "张三"
DEMO_ID_NUMBER = "430102199003071234"  # valid checksum, fictional person
DEMO_ADMIN = "admin"

# The keys scripts/demo.py acts with: (department, scope).
DEMO_KEYS = [("police", ApiKeyScope.INTEGRATOR), ("transport", ApiKeyScope.SCANNER)]
DEMO_KEY_NAME = "make demo"


def demo_keys_file() -> Path | None:
    """Where the demo's keys go: ``DEMO_KEYS_FILE``, else ``var/demo-keys.json``
    on a laptop (DEBUG); nowhere otherwise."""
    if os.environ.get("DEMO_KEYS_FILE"):
        return Path(os.environ["DEMO_KEYS_FILE"])
    return Path(settings.VAR_DIR) / "demo-keys.json" if settings.DEBUG else None


def demo_keys_ensure(path: Path) -> int:
    """Keeps the keys in ``path`` that still work; makes the missing ones
    (revoking earlier demo keys) and rewrites the file. Returns how many it made."""
    try:
        kept = json.loads(path.read_text(encoding="utf-8")).get("keys", [])
    except (FileNotFoundError, ValueError, AttributeError):
        kept = []
    keys, made = [], 0
    for code, scope in DEMO_KEYS:
        entry = next(
            (
                e
                for e in kept
                if isinstance(e, dict) and e.get("department") == code and e.get("scope") == scope
            ),
            None,
        )
        key = api_key_authenticate(str(entry["key"])) if entry else None
        if (
            key is None
            or key.department.code != code
            or key.scope != scope
            or key.name != DEMO_KEY_NAME
        ):
            old_keys = ApiKey.objects.filter(
                department__code=code, scope=scope, name=DEMO_KEY_NAME, revoked_at=None
            ).select_related("department")
            for old in old_keys:
                api_key_revoke(key=old, actor=None)
            department = Department.objects.get(code=code)
            _key, raw = api_key_create(department=department, scope=scope, name=DEMO_KEY_NAME)
            entry, made = {"department": code, "scope": scope.value, "key": raw}, made + 1
        keys.append(entry)
    if made:
        _write_private(path, {"keys": keys})
    return made


def _write_private(path: Path, content: dict) -> None:
    """Replaces ``path`` at once with a file only its owner may read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:  # mkstemp: mode 0600
            json.dump(content, file, ensure_ascii=False, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Command(BaseCommand):
    help = "Load the demo departments, catalog and accounts (idempotent)."

    def handle(self, *args, **options) -> None:
        # A well-known password is only for a laptop (DEBUG); elsewhere the
        # demo operator exists only if its password is given.
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "changsha-demo" if settings.DEBUG else "")
        with transaction.atomic():
            # What is already there stays as it is (department_ensure would
            # rename a department back, category_ensure rewrite a category).
            departments = set(Department.objects.values_list("code", flat=True))
            for code, name, name_en, phone in DEPARTMENTS:
                if code not in departments:
                    department_ensure(code=code, name=name, name_en=name_en, contact_phone=phone)
            catalog = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))
            categories = set(Category.objects.values_list("code", flat=True))
            for category in catalog["categories"]:
                if category["code"] not in categories:
                    category_ensure(**category)
            report = catalog_import(catalog["services"], actor=None, missing_only=True)
            operator = User.objects.filter(username=DEMO_ADMIN).first()
            if operator is None and password:
                User.objects.create_superuser(DEMO_ADMIN, password)
            citizen = User.objects.filter(phone=DEMO_PHONE).first()
            if citizen is None:
                citizen = User(phone=DEMO_PHONE, nickname="长沙市民")
                citizen.set_unusable_password()
                citizen.save()
            if citizen.identity_level < IdentityLevel.REAL_NAME:
                real_name_verify(user=citizen, name=DEMO_NAME, id_number=DEMO_ID_NUMBER)
        # After the commit: the file never names keys that were rolled back.
        keys_file = demo_keys_file()
        keys_made = demo_keys_ensure(keys_file) if keys_file else 0
        operator_note = f"operator '{DEMO_ADMIN}'"
        if not password and operator is None:
            operator_note = "no demo operator (set DEMO_ADMIN_PASSWORD)"
        self.stdout.write(
            f"demo data ready: {len(DEPARTMENTS)} departments, {len(catalog['categories'])} categories, "
            f"{len(catalog['services'])} services ({len(report.created)} new), {operator_note}, "
            f"citizen {DEMO_PHONE} (real-name verified)"
        )
        if keys_file:
            self.stdout.write(
                f"make demo's API keys in {keys_file} ({keys_made or 'none'} new; readable by you only)"
            )
