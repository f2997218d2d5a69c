"""Test settings: the base settings plus fast hashing and in-memory edges.

``DATABASE_URL`` and ``REDIS_URL`` keep their meaning, so the same suite runs
on the embedded default and on PostgreSQL + Redis (CI's second pass).
"""

from __future__ import annotations

import os

from .base import *  # noqa: F403
from .base import CACHES, REDIS_URL

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SMS_BACKEND = "locmem"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
ROUTING_ALLOW_PRIVATE_ENDPOINTS = True
PAYMENTS_SANDBOX = True

if REDIS_URL:
    # Every run gets its own key space in the shared Redis database.
    CACHES["default"]["KEY_PREFIX"] = f"mcs-test-{os.getpid()}"
    PAYMENTS_INBOX_KEY_PREFIX = f"mcs-test-{os.getpid()}:payments"

# Tests never collect static files; serving them is not under test.
MIDDLEWARE = [m for m in MIDDLEWARE if m != "whitenoise.middleware.WhiteNoiseMiddleware"]  # noqa: F405

# The sandbox channels answer at once, never twice unless a test says so,
# and deliver their callbacks to this process (through Django's test client).
PAYMENTS_SANDBOX_NOTIFY_DELAY_SECONDS = 0.0
PAYMENTS_SANDBOX_DUPLICATE_RATE = 0.0
PAYMENTS_SANDBOX_REFUND_SECONDS = 0.0
PAYMENTS_SANDBOX_NOTIFY_TRANSPORT = "tests.payments.wire.in_process_transport"
PAYMENTS_SANDBOX_KEY_DIR = str(BASE_DIR / "var" / "test-sandbox-keys")  # noqa: F405
