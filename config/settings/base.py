"""Settings for every environment, read from environment variables only.

Production is this module with production values in the environment; tests
add ``config.settings.test`` on top. The embedded default (no env vars at all)
runs on SQLite with a server-less Celery broker, so a laptop with nothing but
Python runs the whole system.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

# Development values. With DEBUG=0 none of these is accepted (see below).
DEV_SECRET_KEY = "dev-insecure-secret-key-for-my-changsha-do-not-use-in-production"
DEV_FIELD_ENCRYPTION_KEY = "ZGV2LW9ubHktcGlpLWtleS1kby1ub3QtdXNlLWl0ISE="
DEV_BLIND_INDEX_KEY = "dev-insecure-blind-index-key"


def secret(name: str, default: str = "") -> str:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE``."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path} cannot be read: {exc}") from exc
    return env.str(name, default=default)


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list from ``NAME``, each item trimmed, empty ones
    left out (``"a, b,"`` is ``["a", "b"]``); ``default`` when unset."""
    if name not in env.ENVIRON:
        return default
    return [item.strip() for item in env.str(name).split(",") if item.strip()]


DEBUG = env.bool("DEBUG", default=True)

SECRET_KEY = secret("SECRET_KEY", DEV_SECRET_KEY)
# Comma-separated Fernet keys: the first encrypts, all decrypt (rotation).
FIELD_ENCRYPTION_KEYS = [
    k.strip()
    for k in secret("FIELD_ENCRYPTION_KEY", DEV_FIELD_ENCRYPTION_KEY).split(",")
    if k.strip()
]
# Key of the blind index (HMAC) over PII. It does not rotate with the
# encryption keys: changing it means rebuilding every index.
BLIND_INDEX_KEY = secret("BLIND_INDEX_KEY", DEV_BLIND_INDEX_KEY)


# The shortest secrets production accepts (Django's own deploy check wants
# 50 characters and 5 distinct ones for SECRET_KEY).
MIN_SECRET_LENGTH = {"SECRET_KEY": 50, "BLIND_INDEX_KEY": 32}
MIN_SECRET_DISTINCT = 5


def _check_production_secrets() -> None:
    problems = {
        "SECRET_KEY": not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY,
        "FIELD_ENCRYPTION_KEY": not FIELD_ENCRYPTION_KEYS
        or DEV_FIELD_ENCRYPTION_KEY in FIELD_ENCRYPTION_KEYS,
        "BLIND_INDEX_KEY": not BLIND_INDEX_KEY or BLIND_INDEX_KEY == DEV_BLIND_INDEX_KEY,
    }
    for name, bad in problems.items():
        if bad:
            raise ImproperlyConfigured(
                f"{name} is missing or is the development value, and DEBUG=0. "
                f"Set {name} (or {name}_FILE) to a production secret."
            )
    for name, value in (("SECRET_KEY", SECRET_KEY), ("BLIND_INDEX_KEY", BLIND_INDEX_KEY)):
        if len(value) < MIN_SECRET_LENGTH[name] or len(set(value)) < MIN_SECRET_DISTINCT:
            raise ImproperlyConfigured(
                f"{name} is too weak for DEBUG=0: use at least {MIN_SECRET_LENGTH[name]} "
                f"random characters, e.g. python -c 'import secrets; "
                f"print(secrets.token_urlsafe(64))'"
            )


if not DEBUG:
    _check_production_secrets()


def _check_fernet_keys() -> None:
    import base64

    from cryptography.fernet import Fernet

    for key in FIELD_ENCRYPTION_KEYS:
        try:
            Fernet(key)
        except ValueError as exc:
            raise ImproperlyConfigured(
                "FIELD_ENCRYPTION_KEY must be url-safe base64 of 32 bytes (a Fernet key); "
                "generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from exc
        # 32 random bytes have some 30 distinct values; a key typed by hand
        # (all zeros, a repeated word) has a handful.
        if not DEBUG and len(set(base64.urlsafe_b64decode(key))) < 16:
            raise ImproperlyConfigured(
                "FIELD_ENCRYPTION_KEY is too weak for DEBUG=0: generate it with "
                "python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            )


_check_fernet_keys()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", default=["*"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", default=[])
# Number of reverse proxies in front of the web nodes; X-Forwarded-For is
# trusted only that deep when finding the client address for throttles.
# Any value above 0 also believes the nearest proxy's X-Forwarded-Proto
# (SECURE_PROXY_SSL_HEADER, below): a negative or non-integer value is
# refused rather than read one way here and another way there.
_num_proxies = env.str("NUM_PROXIES", default="0").strip() or "0"
if not (_num_proxies.isascii() and _num_proxies.isdigit()):
    raise ImproperlyConfigured(
        f"NUM_PROXIES={_num_proxies!r} is not a whole number of 0 or more: set it to the "
        "number of reverse proxies in front of the web nodes (0 when there is none)."
    )
NUM_PROXIES = int(_num_proxies)

INSTALLED_APPS = [
    "accounts.admin_site.OperatorAdminConfig",  # django.contrib.admin with the operators' site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "axes",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "accounts",
    "services",
    "payments",
    "qr",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.ApiRequestLimitsMiddleware",
    "config.middleware.SameOriginPagesMiddleware",
    "config.middleware.PagesRefuseNulMiddleware",
    "config.middleware.RequestCharsetMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out admin login into 429.
    "axes.middleware.AxesMiddleware",
]

# Admin logins go through django-axes first: after ADMIN_LOGIN_FAILURE_LIMIT
# wrong passwords for one username from one client address, that pair is
# locked out for ADMIN_LOGIN_COOLOFF_MINUTES (`manage.py axes_reset` lifts it).
# An IPv6 client counts by its /64 (config.api.lockout_address), as the
# per-address throttles count it: its host may take any address in it.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Staff passwords (citizens have none: they log in by SMS code). Django
# checks nothing unless these are named.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("ADMIN_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "config.api.lockout_address"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# What a failed attempt records of the form: never the password (axes' rule) nor the CSRF token.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "csrfmiddlewaretoken"]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------

# DATABASE_URL and REDIS_URL carry passwords: either may come from a file
# (DATABASE_URL_FILE, REDIS_URL_FILE), as the other secrets do.
DATABASES = {
    "default": environ.Env.db_url_config(
        secret("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's, its bulk statements cut to fit one statement's parameters
    # (config/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "config.postgresql"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one file: WAL lets readers run beside the
    # writer, IMMEDIATE transactions take the write lock up front so two
    # writers queue instead of deadlocking on a lock upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "config.postgresql" and env.bool(
        "DATABASE_PREPARED_STATEMENTS", default=True
    ):
        # Parameters bound by PostgreSQL, and a statement a connection has
        # run five times kept prepared there, parsed once (measured in
        # README "Running on PostgreSQL and Redis"). Each run is planned for its own
        # values (force_custom_plan): a plan made once for all values does
        # not know one status from another, and the plans of the queue
        # queries (deliveries, orders, refunds) depend on it. Off (Django's
        # default: values quoted into the SQL text) behind a pooler that
        # cannot keep prepared statements.
        database_options = DATABASES["default"].setdefault("OPTIONS", {})
        database_options.update(server_side_binding=True, prepare_threshold=5)
        database_options["options"] = " ".join(
            [database_options.get("options", ""), "-c plan_cache_mode=force_custom_plan"]
        ).strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Redis: broker, results and cache ----------------------------------------

REDIS_URL = secret("REDIS_URL")

CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "mcs",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Public pages (the catalog) are kept in each web process while their data's
# version holds (config/pages.py), and rendered again after this long anyway.
PUBLIC_PAGE_SECONDS = env.int("PUBLIC_PAGE_SECONDS", default=60)
# Kept catalog pages answered in front of Django's request cycle, Django's
# own answer byte for byte (config.pages.PagesFastPath); 0: through the cycle.
PUBLIC_PAGES_FAST_PATH = env.bool("PUBLIC_PAGES_FAST_PATH", default=True)

# --- Celery ------------------------------------------------------------------

CELERY_BROKER_DIR = VAR_DIR / "broker"
# The broker: CELERY_BROKER_URL when set (RabbitMQ: amqp://user:password@host:5672/vhost),
# else Redis at REDIS_URL, else the server-less broker. Whichever carries the
# tasks, REDIS_URL keeps the rest of what Redis holds (cache, throttles, the
# scan buffer, the payments inbox, the routing wake mark).
CELERY_BROKER_URL = secret("CELERY_BROKER_URL") or REDIS_URL or "filesystem://localhost/"
CELERY_RESULT_BACKEND = REDIS_URL or None
_broker_scheme = CELERY_BROKER_URL.split("://", 1)[0].lower()
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any]
if _broker_scheme in ("redis", "rediss", "redis+socket"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A message not acknowledged within this time is handed to another
        # worker. Tasks never wait longer than CELERY_MAX_COUNTDOWN in the
        # broker (longer waits are kept in the database and swept), and no
        # task runs anywhere near this long, so redelivery only happens for a
        # worker that died.
        "visibility_timeout": 3600,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
    }
elif _broker_scheme == "filesystem":
    # Server-less broker: messages are files in var/broker, shared by the web,
    # worker and beat processes of one machine.
    # The host is a placeholder the transport ignores; without one kombu
    # warns on every connection (each task sent) that it assumed localhost.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "messages"),
        "data_folder_out": str(CELERY_BROKER_DIR / "messages"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
elif _broker_scheme in ("amqp", "amqps", "pyamqp"):
    # RabbitMQ hands a worker's unacknowledged messages to another when its
    # connection dies, and has no visibility timeout. A task with a countdown
    # is held unacknowledged by a worker until it has run, so the server's
    # consumer_timeout (30 min by default) must exceed CELERY_MAX_COUNTDOWN
    # plus the longest task, as the visibility timeout does for Redis.
    # A write that RabbitMQ does not take within 5 s (a memory or disk alarm
    # blocks publishers) fails instead of holding a web request: a wake or a
    # nudge is only a shortcut, the sweeper sends what it would have.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"write_timeout": 5}
else:
    # Another transport (Redis Sentinel, SQS, ...) needs options of its own
    # that nothing here sets or tests: refused rather than run half-configured.
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL: {_broker_scheme}:// is not supported; "
        "use amqp:// or amqps:// (RabbitMQ) or redis:// or rediss:// (Redis)"
    )
# The longest countdown a task may be given; longer waits go through the
# database (next_attempt_at) and the periodic sweeper.
CELERY_MAX_COUNTDOWN = 600
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "Asia/Shanghai"
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queues by kind of work, so deliveries cannot starve payments or housekeeping.
# A worker started without -Q consumes all of them.
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name, type="direct"), routing_key=name)
    for name in ("default", "deliveries", "payments", "housekeeping")
]
CELERY_TASK_DEFAULT_EXCHANGE = "default"
CELERY_TASK_DEFAULT_ROUTING_KEY = "default"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Every periodic task expires about a period after beat sends it, so that
# while the workers of its queue are down the sends do not pile up to all
# run when they return: an hourly or daily one after its period, one of
# seconds or minutes after two, and never under half a minute (the hosts'
# clocks and the broker's latency). The option is ``expire_seconds``: the
# database scheduler keeps that one and drops ``expires``.
HOUR, DAY = 3600, 86400


def expire_after(period_seconds: float, *, floor: int = 30) -> int:
    """``expire_seconds`` of a task sent every ``period_seconds``."""
    return max(math.ceil(2 * period_seconds), floor)


CELERY_BEAT_SCHEDULE: dict = {
    "accounts-purge-idempotency-records": {
        "task": "accounts.purge_idempotency_records",
        "schedule": crontab(minute=23),
        "options": {"queue": "housekeeping", "expire_seconds": HOUR},
    },
    "accounts-purge-otp-challenges": {
        "task": "accounts.purge_otp_challenges",
        "schedule": crontab(minute=17),
        "options": {"queue": "housekeeping", "expire_seconds": HOUR},
    },
    # Records of refresh tokens past their expiry (every login and refresh
    # leaves one).
    "accounts-purge-refresh-tokens": {
        "task": "accounts.purge_refresh_tokens",
        "schedule": crontab(hour=4, minute=29),
        "options": {"queue": "housekeeping", "expire_seconds": DAY},
    },
    # Messages posted to accounts after they closed.
    "accounts-purge-closed-inboxes": {
        "task": "accounts.purge_closed_inboxes",
        "schedule": crontab(hour=4, minute=41),
        "options": {"queue": "housekeeping", "expire_seconds": DAY},
    },
    # Admin sessions past their expiry (Django's clearsessions), with the
    # messages they held.
    "accounts-purge-expired-sessions": {
        "task": "accounts.purge_expired_sessions",
        "schedule": crontab(hour=4, minute=53),
        "options": {"queue": "housekeeping", "expire_seconds": DAY},
    },
}
CELERY_TASK_ALWAYS_EAGER = False

# --- Internationalisation ------------------------------------------------------

LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Asia/Shanghai"
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------

STATIC_URL = "static/"
# Where collectstatic puts the files WhiteNoise serves (with DEBUG=0, from its manifest).
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security ------------------------------------------------------------------

SESSION_COOKIE_SECURE = not DEBUG
# Sessions are the admin's only (the API authenticates by token or key): a
# console that reveals citizens' data keeps one a working day, not Django's
# two weeks, and not past the browser's closing.
SESSION_COOKIE_AGE = env.int("ADMIN_SESSION_HOURS", default=8) * 3600
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# The admin's messages are kept in the session, on the server, not in
# Django's default cookie (signed, not encrypted). Still no secret goes in a
# message: the session's row keeps it until the next page or its expiry (a
# new API key is shown in the answer to the form that made it).
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
CSRF_FAILURE_VIEW = "config.api.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if NUM_PROXIES else None
# HTTPS switches, off unless the deployment terminates TLS in front of us
# and says so. The probes stay reachable over plain HTTP for load balancers.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)

# The largest request body any API accepts; larger bodies get 413.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=256 * 1024)
# A scanner's batch of offline scans (QR_OFFLINE_BATCH_MAX of them, each a
# code of some 400 characters with its event id, time and verdict).
QR_SCAN_UPLOAD_MAX_BYTES = env.int("QR_SCAN_UPLOAD_MAX_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BODY_BYTES, QR_SCAN_UPLOAD_MAX_BYTES, 2_621_440)

# --- REST framework --------------------------------------------------------------

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.CitizenJWTAuthentication",
        "accounts.authentication.ApiKeyAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.api.StrictJSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "config.api.PagePagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "config.api.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "config.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "login": env.str("THROTTLE_LOGIN", default="30/min"),
        "refresh": env.str("THROTTLE_REFRESH", default="60/min"),
        "real_name": env.str("THROTTLE_REAL_NAME", default="10/day"),
    },
    # Our throttles use config.api.client_ip; 0 keeps any stock DRF throttle
    # off X-Forwarded-For too (None would trust the whole header).
    "NUM_PROXIES": NUM_PROXIES,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DATETIME_FORMAT": "iso-8601",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=30)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "My Changsha (我的长沙) API",
    "DESCRIPTION": (
        "One entry for every city service: citizens log in once, find any "
        "department's service, apply, pay, follow progress and carry the "
        "star-code. Departments integrate through `/api/v1/dept/` with an "
        "`Api-Key`. Every error is RFC 9457 problem details with a stable "
        "`code`; the list of codes is at `/api/problems/`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI and ReDoc from our own static files (drf-spectacular-sidecar):
    # an offline network has no CDN, and the versions are pinned with ours.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge fetched from validator.swagger.io: /api/docs/ calls no other host.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "ENUM_NAME_OVERRIDES": {
        "IdentityLevelEnum": "accounts.models.IdentityLevel",
        "ApplicationStatusEnum": "services.models.ApplicationStatus",
        "DeliveryStatusEnum": "services.models.DeliveryStatus",
        "OrderStatusEnum": "payments.models.OrderStatus",
        "RefundStatusEnum": "payments.models.RefundStatus",
        "PaymentChannelEnum": "payments.models.Channel",
        "ServiceChannelEnum": "services.models.Channel",
    },
    # Path parameters as the URL patterns match them (drf-spectacular says only
    # "string"): a value outside them reaches no view, so a client must know it.
    "PATH_CONVERTER_OVERRIDES": {
        "slug": {"type": "string", "pattern": r"^[-a-zA-Z0-9_]+$"},
        "str": {"type": "string", "pattern": r"^[^/]+$"},
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api.add_generic_problem_responses",
        # Last: examples go on the answers the hooks above documented too.
        "config.openapi_examples.add_examples",
    ],
}

# --- Accounts: OTP, SMS, identity -----------------------------------------------

OTP_TTL_SECONDS = env.int("OTP_TTL_SECONDS", default=300)
OTP_MAX_ATTEMPTS = env.int("OTP_MAX_ATTEMPTS", default=5)
OTP_SEND_INTERVAL_SECONDS = env.int("OTP_SEND_INTERVAL_SECONDS", default=60)
OTP_SEND_DAILY_LIMIT_PER_PHONE = env.int("OTP_SEND_DAILY_LIMIT_PER_PHONE", default=10)
# Of those, how many one client address (an IPv6 client's /64) may ask for:
# a stranger on one network cannot use up a number's day (accounts.otp).
OTP_SEND_DAILY_LIMIT_PER_PHONE_PER_IP = env.int("OTP_SEND_DAILY_LIMIT_PER_PHONE_PER_IP", default=3)
OTP_SEND_HOURLY_LIMIT_PER_IP = env.int("OTP_SEND_HOURLY_LIMIT_PER_IP", default=100)
OTP_SEND_DAILY_LIMIT_PER_IP = env.int("OTP_SEND_DAILY_LIMIT_PER_IP", default=500)

SMS_BACKENDS = {
    "console": "accounts.sms.ConsoleBackend",
    "file": "accounts.sms.FileBackend",
    "locmem": "accounts.sms.LocmemBackend",
}
# The console backend prints whole phone numbers and codes: in production
# only when chosen explicitly.
SMS_BACKEND = env.str("SMS_BACKEND", default="console" if DEBUG else "")
if not SMS_BACKEND:
    raise ImproperlyConfigured(
        "SMS_BACKEND is not set and DEBUG=0. Set it to the dotted path of your SMS "
        "gateway's backend (or `file`; `console` prints phone numbers and codes)."
    )
SMS_FILE_PATH = env.str("SMS_FILE_PATH", default=str(VAR_DIR / "sms-outbox.jsonl"))
SMS_SIGNATURE = "【我的长沙】"

# The sandbox says yes to every valid ID number, whatever the name: the
# default in debug only, elsewhere only when named. Unset, real-name checks
# answer 503 identity_provider_unavailable (and log why).
IDENTITY_PROVIDER = env.str(
    "IDENTITY_PROVIDER", default="accounts.identity.SandboxIdentityProvider" if DEBUG else ""
)

# --- Routing to department systems ------------------------------------------------

# Seconds to wait before each retry after the first try (design §6).
ROUTING_RETRY_SCHEDULE = [
    int(s)
    for s in env_list(
        "ROUTING_RETRY_SCHEDULE",
        default=["5", "30", "120", "600", "1800", "3600", "10800", "21600"],
    )
]
ROUTING_RETRY_JITTER = env.float("ROUTING_RETRY_JITTER", default=0.1)
ROUTING_TIMEOUT_SECONDS = env.float("ROUTING_TIMEOUT_SECONDS", default=10.0)
# How long a worker holds a delivery it is sending (longer than the timeout).
ROUTING_LEASE_SECONDS = env.int("ROUTING_LEASE_SECONDS", default=60)
# Consecutive failed tries that pause an endpoint (circuit breaker).
ROUTING_BREAKER_THRESHOLD = env.int("ROUTING_BREAKER_THRESHOLD", default=10)
ROUTING_PROBE_INTERVAL_SECONDS = env.int("ROUTING_PROBE_INTERVAL_SECONDS", default=300)
# Days a finished ping (the probes of a paused endpoint, a department's
# /test/) is kept, with its delivery and attempts; events of applications
# and payments are kept.
ROUTING_PING_RETENTION_DAYS = env.int("ROUTING_PING_RETENTION_DAYS", default=7)
ROUTING_SECRET_OVERLAP_HOURS = env.int("ROUTING_SECRET_OVERLAP_HOURS", default=24)
# Endpoints a department may have at once (every event goes to each that
# takes it), and the pings and retries an API key may ask for: both make
# work for the delivery workers that every department shares.
ROUTING_MAX_ENDPOINTS = env.int("ROUTING_MAX_ENDPOINTS", default=20)
ROUTING_SEND_RATE = env.str("ROUTING_SEND_RATE", default="60/min")
# Endpoint registrations, changes, removals and secret rotations per API key
# (a registration or a new URL looks its host up while the request waits).
ROUTING_ENDPOINT_WRITE_RATE = env.str("ROUTING_ENDPOINT_WRITE_RATE", default="60/hour")
# Service creations and edits per department API key (each checks a form
# schema the department wrote).
DEPT_SERVICE_WRITE_RATE = env.str("DEPT_SERVICE_WRITE_RATE", default="60/min")
# A due delivery not picked up this long after its nudge is nudged again.
ROUTING_SWEEP_GRACE_SECONDS = env.int("ROUTING_SWEEP_GRACE_SECONDS", default=10)
ROUTING_SWEEP_EVERY_SECONDS = env.float("ROUTING_SWEEP_EVERY_SECONDS", default=5.0)
# A worker claims up to this many due deliveries at once and sends them over
# this many threads; it records what has answered every so often, and takes
# batch after batch for up to the budget before handing over to a new task.
ROUTING_BATCH_SIZE = env.int("ROUTING_BATCH_SIZE", default=32)
ROUTING_SEND_CONCURRENCY = env.int("ROUTING_SEND_CONCURRENCY", default=16)
ROUTING_RECORD_EVERY_SECONDS = env.float("ROUTING_RECORD_EVERY_SECONDS", default=0.25)
ROUTING_BATCH_BUDGET_SECONDS = env.float("ROUTING_BATCH_BUDGET_SECONDS", default=20.0)
# While a wake for new events is on its way to a worker no other is sent; a
# wake lost on the way stops holding the others back after this long.
ROUTING_WAKE_SECONDS = env.int("ROUTING_WAKE_SECONDS", default=ROUTING_SWEEP_GRACE_SECONDS)
if ROUTING_BATCH_SIZE < 1 or ROUTING_SEND_CONCURRENCY < 1:
    raise ImproperlyConfigured(
        "ROUTING_BATCH_SIZE and ROUTING_SEND_CONCURRENCY must be at least 1."
    )
# The hold must outlast the slowest batch: every POST of it as slow as one
# can be (services.routing.deliveries.slowest_post_seconds: about twice the
# timeout), in as many rounds as the threads need. A POST that would start
# too late for its hold is not sent but let go for the next claim.
_slowest_batch = (2 * ROUTING_TIMEOUT_SECONDS + 1) * -(
    -ROUTING_BATCH_SIZE // ROUTING_SEND_CONCURRENCY
)
if _slowest_batch >= ROUTING_LEASE_SECONDS:
    raise ImproperlyConfigured(
        f"ROUTING_LEASE_SECONDS ({ROUTING_LEASE_SECONDS}) must exceed the slowest batch "
        f"({_slowest_batch:g} s: (2 x ROUTING_TIMEOUT_SECONDS + 1) x ROUTING_BATCH_SIZE / "
        "ROUTING_SEND_CONCURRENCY, rounded up)."
    )

CELERY_TASK_ROUTES = {
    "routing.deliver": {"queue": "deliveries"},
    "routing.deliver_due": {"queue": "deliveries"},
    "routing.sweep": {"queue": "housekeeping"},
    "routing.probe_paused": {"queue": "housekeeping"},
    "routing.purge_pings": {"queue": "housekeeping"},
}
CELERY_BEAT_SCHEDULE.update(
    {
        "routing-sweep": {
            "task": "routing.sweep",
            "schedule": ROUTING_SWEEP_EVERY_SECONDS,
            "options": {"expire_seconds": expire_after(ROUTING_SWEEP_EVERY_SECONDS)},
        },
        "routing-probe-paused": {
            "task": "routing.probe_paused",
            "schedule": 60.0,
            "options": {"expire_seconds": expire_after(60)},
        },
        # Finished pings past ROUTING_PING_RETENTION_DAYS.
        "routing-purge-pings": {
            "task": "routing.purge_pings",
            "schedule": crontab(hour=3, minute=53),
            "options": {"queue": "housekeeping", "expire_seconds": DAY},
        },
    }
)

# --- Platform switches (design §3) ------------------------------------------------

STAR_CODE_TTL = env.int("STAR_CODE_TTL", default=60)
ROUTING_ALLOW_PRIVATE_ENDPOINTS = env.bool("ROUTING_ALLOW_PRIVATE_ENDPOINTS", default=DEBUG)
PAYMENTS_SANDBOX = env.bool("PAYMENTS_SANDBOX", default=DEBUG)

# --- Payments -------------------------------------------------------------------------

# Unpaid orders close after this long (and at the channel).
PAYMENTS_ORDER_TTL_SECONDS = env.int("PAYMENTS_ORDER_TTL_SECONDS", default=30 * 60)
# A pending order with no callback this long after it was opened is queried
# from the channel (主动查单) by the payments sweep, at most every this often.
PAYMENTS_QUERY_AFTER_SECONDS = env.int("PAYMENTS_QUERY_AFTER_SECONDS", default=60)
PAYMENTS_SWEEP_EVERY_SECONDS = env.float("PAYMENTS_SWEEP_EVERY_SECONDS", default=15.0)
# Where the channels send their callbacks: <base>/api/v1/payments/notify/<channel>/.
PAYMENTS_NOTIFY_BASE_URL = env.str("PAYMENTS_NOTIFY_BASE_URL", default="http://127.0.0.1:8000")
# Callbacks per client address and minute (channels call from few addresses).
PAYMENTS_NOTIFY_RATE = env.str("PAYMENTS_NOTIFY_RATE", default="6000/min")
# Answer the channels' callbacks in front of Django's request cycle
# (payments/fastpath.py); 0 sends every callback through the full cycle.
PAYMENTS_NOTIFY_FAST_PATH = env.bool("PAYMENTS_NOTIFY_FAST_PATH", default=True)
# Where an acknowledged callback waits for a worker (payments/inbox.py):
# "redis" (a stream, and the orders' facts cached there; the default with
# REDIS_URL) or "database" (a NotifyLog row per callback).
PAYMENTS_NOTIFY_INBOX = env.str(
    "PAYMENTS_NOTIFY_INBOX", default="redis" if REDIS_URL else "database"
)
if PAYMENTS_NOTIFY_INBOX not in ("redis", "database"):
    raise ImproperlyConfigured('PAYMENTS_NOTIFY_INBOX must be "redis" or "database"')
if PAYMENTS_NOTIFY_INBOX == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("PAYMENTS_NOTIFY_INBOX=redis needs REDIS_URL")
# The inbox's Redis keys: a namespace of their own, outside the cache's (a
# new cache KEY_PREFIX or version must not orphan acknowledged callbacks).
PAYMENTS_INBOX_KEY_PREFIX = env.str("PAYMENTS_INBOX_KEY_PREFIX", default="mcs:payments")
# The merchant's account at each channel. Key files (PEM) and serials come
# from env in production; in sandbox mode the sandbox's own keys are used.
PAYMENTS_CHANNELS: dict[str, dict[str, str]] = {
    "wechat": {
        "provider": "payments.providers.wechat.WechatPayProvider",
        "merchant_id": env.str("PAYMENTS_WECHAT_MCHID", default="1900000109"),
        "app_id": env.str("PAYMENTS_WECHAT_APPID", default="wxd678efh567hg6787"),
        "api_base_url": "https://api.mch.weixin.qq.com",
        "sandbox_base_url": "https://wechat.sandbox.invalid",
        "private_key_file": env.str("PAYMENTS_WECHAT_PRIVATE_KEY_FILE", default=""),
        "merchant_serial": env.str("PAYMENTS_WECHAT_MERCHANT_SERIAL", default=""),
        "platform_key_file": env.str("PAYMENTS_WECHAT_PLATFORM_KEY_FILE", default=""),
        "platform_serial": env.str("PAYMENTS_WECHAT_PLATFORM_SERIAL", default=""),
        "api_v3_key": secret("PAYMENTS_WECHAT_API_V3_KEY", ""),
    },
    "alipay": {
        "provider": "payments.providers.alipay.AlipayProvider",
        # app_id is the merchant's application; merchant_id its seller_id (PID).
        "merchant_id": env.str("PAYMENTS_ALIPAY_SELLER_ID", default="2088102147948060"),
        "app_id": env.str("PAYMENTS_ALIPAY_APP_ID", default="2021000122671234"),
        "api_base_url": "https://openapi.alipay.com",
        "sandbox_base_url": "https://alipay.sandbox.invalid",
        "private_key_file": env.str("PAYMENTS_ALIPAY_PRIVATE_KEY_FILE", default=""),
        "platform_key_file": env.str("PAYMENTS_ALIPAY_PUBLIC_KEY_FILE", default=""),
    },
    "unionpay": {
        "provider": "payments.providers.unionpay.UnionpayProvider",
        "merchant_id": env.str("PAYMENTS_UNIONPAY_MER_ID", default="777290058110048"),
        "app_id": env.str("PAYMENTS_UNIONPAY_ACCESS_TYPE", default="0"),
        "api_base_url": "https://gateway.95516.com",
        "sandbox_base_url": "https://unionpay.sandbox.invalid",
        "private_key_file": env.str("PAYMENTS_UNIONPAY_PRIVATE_KEY_FILE", default=""),
        "merchant_serial": env.str("PAYMENTS_UNIONPAY_CERT_ID", default=""),
        "platform_key_file": env.str("PAYMENTS_UNIONPAY_PLATFORM_KEY_FILE", default=""),
        "platform_serial": env.str("PAYMENTS_UNIONPAY_PLATFORM_CERT_ID", default=""),
    },
}
# The sandbox channels (only with PAYMENTS_SANDBOX): where their keys live,
# how late their first callback comes, how often a callback is sent twice,
# how their retry schedules are compressed (1 = the channel's real
# schedule), how long a refund takes to settle.
PAYMENTS_SANDBOX_KEY_DIR = env.str(
    "PAYMENTS_SANDBOX_KEY_DIR", default=str(VAR_DIR / "sandbox-keys")
)
PAYMENTS_SANDBOX_NOTIFY_DELAY_SECONDS = env.float(
    "PAYMENTS_SANDBOX_NOTIFY_DELAY_SECONDS", default=1.0
)
PAYMENTS_SANDBOX_DUPLICATE_RATE = env.float("PAYMENTS_SANDBOX_DUPLICATE_RATE", default=0.2)
PAYMENTS_SANDBOX_TIME_SCALE = env.float("PAYMENTS_SANDBOX_TIME_SCALE", default=0.01)
PAYMENTS_SANDBOX_REFUND_SECONDS = env.float("PAYMENTS_SANDBOX_REFUND_SECONDS", default=2.0)
# The dotted path of a factory of the httpx transport the sandbox's callbacks
# take; empty: over the network (the tests deliver them to their own process).
PAYMENTS_SANDBOX_NOTIFY_TRANSPORT = ""

CELERY_TASK_ROUTES.update(
    {
        "payments.refund_send": {"queue": "payments"},
        "payments.notifies_apply": {"queue": "payments"},
        "payments.sandbox_notify": {"queue": "payments"},
        "payments.sweep": {"queue": "payments"},
        "payments.reconcile": {"queue": "payments"},
    }
)
# Channels publish a day's statement the next morning (WeChat Pay after 10:00).
CELERY_BEAT_SCHEDULE["payments-reconcile"] = {
    "task": "payments.reconcile",
    "schedule": crontab(hour=10, minute=30),
    "options": {"queue": "payments", "expire_seconds": DAY},
}
CELERY_BEAT_SCHEDULE["payments-sweep"] = {
    "task": "payments.sweep",
    "schedule": PAYMENTS_SWEEP_EVERY_SECONDS,
    "options": {
        "queue": "payments",
        "expire_seconds": expire_after(PAYMENTS_SWEEP_EVERY_SECONDS, floor=60),
    },
}

# --- Star-code (qr) ------------------------------------------------------------------

# The ``iss`` of every star-code and venue code.
QR_ISSUER = env.str("QR_ISSUER", default="https://my.changsha.gov.cn")
# A rotated-in key is published this long before it signs (offline
# scanners refresh their JWKS in that time); JWKS answers are cacheable for
# QR_JWKS_MAX_AGE seconds.
QR_KEY_PUBLISH_AHEAD_SECONDS = env.int("QR_KEY_PUBLISH_AHEAD_SECONDS", default=3600)
QR_JWKS_MAX_AGE = env.int("QR_JWKS_MAX_AGE", default=300)
# How long a web process trusts what it remembered: signing keys, scanner
# keys and profiles (revocations take effect within this), deactivated
# accounts (online verify refuses a suspended account within this).
QR_KEY_CACHE_SECONDS = env.int("QR_KEY_CACHE_SECONDS", default=30)
QR_SCANNER_AUTH_CACHE_SECONDS = env.int("QR_SCANNER_AUTH_CACHE_SECONDS", default=5)
QR_ACCOUNT_STATE_REFRESH_SECONDS = env.float("QR_ACCOUNT_STATE_REFRESH_SECONDS", default=1.0)
# Rates (DRF notation): verifications per scanner key, code resolutions per
# client address, star-codes per citizen.
QR_VERIFY_RATE = env.str("QR_VERIFY_RATE", default="600/min")
# Answer the common case of /api/v1/qr/verify/ in front of Django's request
# cycle (qr/fastpath.py); 0 sends every verify through the full cycle.
QR_VERIFY_FAST_PATH = env.bool("QR_VERIFY_FAST_PATH", default=True)
# The same for star-code issuance with an access token that vouches for the
# citizen (qr/fastpath.py, accounts/token_facts.py).
QR_STAR_CODE_FAST_PATH = env.bool("QR_STAR_CODE_FAST_PATH", default=True)
QR_RESOLVE_RATE = env.str("QR_RESOLVE_RATE", default="60/min")
# Offline scan batches (up to 500 scans each) per scanner key.
QR_SCAN_UPLOAD_RATE = env.str("QR_SCAN_UPLOAD_RATE", default="60/min")
QR_STAR_CODE_RATE = env.str("QR_STAR_CODE_RATE", default="120/min")
# Where scan events wait before the database (qr/recorders.py).
QR_SCAN_RECORDER = env.str(
    "QR_SCAN_RECORDER",
    default="qr.recorders.RedisScanRecorder" if REDIS_URL else "qr.recorders.DatabaseScanRecorder",
)
QR_SCAN_BUFFER_KEY = env.str("QR_SCAN_BUFFER_KEY", default="")  # default: in the cache's prefix
QR_SCAN_FLUSH_SECONDS = env.int("QR_SCAN_FLUSH_SECONDS", default=2)
QR_SCAN_RETENTION_DAYS = env.int("QR_SCAN_RETENTION_DAYS", default=180)
QR_OFFLINE_BATCH_MAX = env.int("QR_OFFLINE_BATCH_MAX", default=500)
QR_REVOCATIONS_PAGE_SIZE = env.int("QR_REVOCATIONS_PAGE_SIZE", default=1000)
QR_REVOCATIONS_LAG_SECONDS = env.int("QR_REVOCATIONS_LAG_SECONDS", default=5)

CELERY_BEAT_SCHEDULE.update(
    {
        "qr-prune-signing-keys": {
            "task": "qr.prune_signing_keys",
            "schedule": timedelta(minutes=10),
            "options": {"queue": "housekeeping", "expire_seconds": expire_after(600)},
        },
        "qr-purge-scan-events": {
            "task": "qr.purge_scan_events",
            "schedule": crontab(hour=3, minute=41),
            "options": {"queue": "housekeeping", "expire_seconds": DAY},
        },
    }
)
if "Redis" in QR_SCAN_RECORDER:
    # Buffered scan events go to the database every few seconds.
    CELERY_BEAT_SCHEDULE["qr-flush-scan-events"] = {
        "task": "qr.flush_scan_events",
        "schedule": timedelta(seconds=QR_SCAN_FLUSH_SECONDS),
        "options": {"queue": "default", "expire_seconds": expire_after(QR_SCAN_FLUSH_SECONDS)},
    }
CELERY_TASK_ROUTES.update(
    {
        "qr.flush_scan_events": {"queue": "default"},
        "qr.prune_signing_keys": {"queue": "housekeeping"},
        "qr.purge_scan_events": {"queue": "housekeeping"},
    }
)

# Mounts /bench/bare, the floor of the HTTP benchmarks (never in production).
BENCHMARK_VIEWS = env.bool("BENCHMARK_VIEWS", default=False)

# --- Logging ------------------------------------------------------------------------

# The level of every logger, gunicorn's included (config/gunicorn.py reads
# it the same way); any case.
LOG_LEVEL = env.str("LOG_LEVEL", default="").strip().upper() or "INFO"
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(
        f"LOG_LEVEL={env.str('LOG_LEVEL')!r} is not a log level: "
        "use DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "mask_pii": {"()": "config.logging.MaskPiiFilter"},
        "quiet_routine": {"()": "config.logging.QuietRoutineTasks"},
    },
    "formatters": {
        "plain": {
            "()": "config.logging.LocalTimeFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            # The sweepers' every-few-seconds lines go first; the mask then
            # renders what is left.
            "filters": ["quiet_routine", "mask_pii"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own defaults put unmasked handlers on these (a console in
        # DEBUG, mail to ADMINS otherwise): here they only propagate, to the
        # masked console.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        # redis-py puts an unmasked handler of its own on this logger unless
        # it exists already.
        "push_response": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.db.backends": {"level": "WARNING"},
        # At DEBUG it logs each variable a template cannot resolve with the
        # whole context in the text (an admin page's CSRF token, form values).
        "django.template": {"level": "INFO"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

ADMIN_SITE_HEADER = _("我的长沙 · 运营管理")

# Settings that name code or rates are checked when the apps are ready
# (`manage.py check`, and gunicorn's workers before they serve).
from config.settings import checks as _checks  # noqa: E402, F401
