"""The OTP send caps per client address count by ``ip_block``
(config.api.client_block: an IPv6 client by its /64, as the throttles
count it), not by the full address.

The column has a database default, so that web nodes still running the
code before it (a rolling deploy) keep inserting challenges; its index is
built, and the old one dropped, without blocking writes
(0007_otp_ip_block_index), and the challenges of the caps' windows get
their block in small batches there."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_verbose_names"),
    ]

    operations = [
        migrations.AddField(
            model_name="otpchallenge",
            name="ip_block",
            field=models.CharField(
                blank=True, db_default="", default="", editable=False, max_length=64
            ),
        ),
    ]
