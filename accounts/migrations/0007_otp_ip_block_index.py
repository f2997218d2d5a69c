"""The index the per-address caps read (``ip_block``, newest first), built
without blocking OTP sends, and the challenges of the last day (the longest
cap's window; older ones count for nothing) given their block in batches of
their own, each a short transaction."""

import datetime as dt
import ipaddress

from django.db import migrations, models, transaction
from django.utils import timezone

from config.schema import AddIndexConcurrentlyOnPostgres, RemoveIndexConcurrentlyOnPostgres

BATCH = 1000


def block_of(address):
    # As config.api.client_block, as it stands when this migration runs.
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))
    return str(parsed)


def fill_blocks(apps, schema_editor):
    OtpChallenge = apps.get_model("accounts", "OtpChallenge")
    since = timezone.now() - dt.timedelta(days=1, hours=1)
    waiting = OtpChallenge.objects.filter(
        created_at__gte=since, ip__isnull=False, ip_block=""
    ).order_by("pk")
    last = None
    while True:
        page = waiting if last is None else waiting.filter(pk__gt=last)
        rows = list(page.values_list("pk", "ip")[:BATCH])
        if not rows:
            return
        with transaction.atomic():
            by_block = {}
            for pk, ip in rows:
                by_block.setdefault(block_of(ip), []).append(pk)
            for block, pks in by_block.items():
                OtpChallenge.objects.filter(pk__in=pks).update(ip_block=block)
        last = rows[-1][0]


class Migration(migrations.Migration):
    # CONCURRENTLY cannot run inside a transaction; the fill commits batch
    # by batch.
    atomic = False

    dependencies = [
        ("accounts", "0006_otp_challenge_ip_block"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="otpchallenge",
            index=models.Index(fields=["ip_block", "-created_at"], name="otp_ip_block_recent"),
        ),
        migrations.RunPython(fill_blocks, migrations.RunPython.noop),
        RemoveIndexConcurrentlyOnPostgres(model_name="otpchallenge", name="otp_ip_recent"),
    ]
