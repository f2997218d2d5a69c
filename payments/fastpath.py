"""The channels' callbacks, answered in front of Django's request cycle.

A channel calls ``POST /api/v1/payments/notify/{channel}/`` once per payment
and again on every retry; at a city's volume the request cycle (middleware,
routing, DRF) would cost more than handling the callback. This WSGI layer
runs the same :func:`payments.notifications.notify_receive` the view runs,
with the same throttle (counted in the first round trip the callback makes
to Redis anyway), and answers with the same status, body and headers
(compared in the tests). What it does not handle as the view would, it
hands to Django unchanged: another path or method, a query string, a
cookie, a language other than Chinese, a body over the limit, a host not
allowed, HTTPS redirects or HSTS switched on, a throttled caller (the view
answers the 429 problem), and whatever fails on the way (the view answers
with its problem).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.core import signals

from config.api import client_ip
from config.fastpath import API_HEADERS, plain_request
from payments import notifications
from payments.apis.notify import NotifyThrottle  # the view's own throttle
from payments.errors import PaymentsError
from payments.models import Channel

logger = logging.getLogger(__name__)

PREFIX = "/api/v1/payments/notify/"
PATHS = {f"{PREFIX}{channel}/": channel for channel in Channel.values}
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers as the view sees them (``request.headers``)."""
    found = {
        key[5:].replace("_", "-").title(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            found[key.replace("_", "-").title()] = str(environ[key])
    return found


class NotifyFastPath:
    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        channel = PATHS.get(environ.get("PATH_INFO", ""))
        if channel is None or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        body = self._body(environ)
        if body is None:
            return self.app(environ, start_response)
        # client_ip and the throttle read META only.
        request: Any = SimpleNamespace(META=environ)
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            reply = notifications.notify_receive(
                channel=channel,
                headers=_headers(environ),
                body=body,
                client_ip=client_ip(request),
                # Counted with the first round trip the callback makes anyway.
                window=NotifyThrottle().window(request),
            )
        except notifications.Throttled:  # the view counts it too, and answers the 429 problem
            reply = None
        except PaymentsError:  # the channel is not configured here: the view says so
            reply = None
        except Exception:  # the view answers with the problem the API gives
            logger.exception("notify fast path failed; handing the callback to Django")
            reply = None
        finally:
            signals.request_finished.send(sender=self.__class__)
        if reply is None:
            environ["wsgi.input"] = io.BytesIO(body)
            return self.app(environ, start_response)
        headers = [
            ("Content-Type", reply.content_type),
            *API_HEADERS,
            *reply.headers.items(),
            ("Content-Length", str(len(reply.body))),
        ]
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", headers)
        return [reply.body]

    @staticmethod
    def _body(environ: dict[str, Any]) -> bytes | None:
        """The body, when this request is one the view would handle alike;
        it is put back for Django whatever the answer."""
        if not plain_request(environ):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if not 0 < length <= settings.API_MAX_BODY_BYTES:
            return None
        body: bytes = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        return body
