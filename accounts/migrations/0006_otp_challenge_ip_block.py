"""The OTP send caps per client address count by ``ip_block``
(config.api.client_block: an IPv6 client by its /64, as the throttles
count it), not by the full address; challenges already sent (kept two
days) get theirs so the caps of the current hour and day still hold."""

import ipaddress

from django.db import migrations, models


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
    for pk, ip in OtpChallenge.objects.filter(ip__isnull=False).values_list("pk", "ip").iterator():
        OtpChallenge.objects.filter(pk=pk).update(ip_block=block_of(ip))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_verbose_names"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="otpchallenge",
            name="otp_ip_recent",
        ),
        migrations.AddField(
            model_name="otpchallenge",
            name="ip_block",
            field=models.CharField(blank=True, default="", editable=False, max_length=64),
        ),
        migrations.AddIndex(
            model_name="otpchallenge",
            index=models.Index(fields=["ip_block", "-created_at"], name="otp_ip_block_recent"),
        ),
        migrations.RunPython(fill_blocks, migrations.RunPython.noop),
    ]
