"""gunicorn's settings for the web nodes: ``gunicorn -c config/gunicorn.py config.wsgi``.

The access log names method, path, status, size and time, but no query
string and no referrer: those carry what people searched for (an operator
looks a citizen up by full phone or ID number). gunicorn's own loggers go
through the project's PII mask, as every other log line does.
"""

from __future__ import annotations

import logging
import os
import time

# Django sets the workers' zone to TIME_ZONE whatever TZ says (an image's
# TZ=UTC included); the master logs in the same one.
os.environ["TZ"] = "Asia/Shanghai"
time.tzset()

# What gunicorn refuses before Django sees it is answered as a problem too.
worker_class = "config.gunicorn_worker.ProblemSyncWorker"

# No control socket: every instance would share one path in the home
# directory (several web nodes or test servers on one machine), and nothing
# here drives gunicorn through it; signals do.
control_socket_disable = True

# gunicorn believes no forwarding header, from any caller: the client's
# address and scheme are the settings' (NUM_PROXIES, SECURE_PROXY_SSL_HEADER),
# decided in Django. By default it believes X-Forwarded-Proto, -SSL and
# -Protocol, and SCRIPT_NAME and PATH_INFO headers, from 127.0.0.1, ::1 and
# every caller on a UNIX socket: a request over plain HTTP was taken as HTTPS
# whatever NUM_PROXIES said.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}
forwarder_headers = ""

# LOG_LEVEL sets gunicorn's loggers as it sets Django's (config/settings/base.py);
# at WARNING and above the access log is silent.
LOG_LEVEL = os.environ.get("LOG_LEVEL", "").strip().upper() or "INFO"
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise SystemExit(
        f"LOG_LEVEL={os.environ['LOG_LEVEL']!r} is not a log level: "
        "use DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )

accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"mask_pii": {"()": "config.logging.MaskPiiFilter"}},
    "formatters": {
        "plain": {
            "()": "config.logging.LocalTimeFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["mask_pii"],
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}


def post_worker_init(worker: object) -> None:
    """A worker serves only settings whose backends, providers and rates
    work (config/settings/checks.py): otherwise it fails to boot, naming
    them, and gunicorn stops."""
    from config.settings.checks import run_or_refuse

    run_or_refuse()
