"""Wrong login codes from networks other than the one that asked for the
code, counted apart (accounts.otp.otp_login keeps the most of a code's
tries for the network that asked).

The column has a constant database default and no CHECK: on PostgreSQL
adding it reads no row (the table is held only for a moment), and web nodes
still running the code before it (a rolling deploy) keep inserting
challenges without it."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0007_otp_ip_block_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="otpchallenge",
            name="attempts_elsewhere",
            field=models.SmallIntegerField(
                db_default=0, default=0, verbose_name="其他网络的核对次数"
            ),
        ),
    ]
