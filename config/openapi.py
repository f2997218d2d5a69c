"""How a view becomes an operation of ``/api/schema/`` (DRF's
``DEFAULT_SCHEMA_CLASS``): drf-spectacular's inspector, told eight things
it cannot see on its own.

- A view refused to a credential that authenticates does not list that
  credential as a way in: a permission's ``security_schemes`` names the only
  schemes it admits (a department's key on a citizen's route is a 403, not a
  login).
- A permission that refuses with a registered code (``api_key_scope``,
  ``citizen_required``) documents that 403 on every operation it guards, and
  a throttled view its 429.
- A public operation has no ``security`` at all, rather than drf-spectacular's
  ``[{}]``, which generated clients read as "needs credentials".
- A partial update (``Patched…`` bodies) has no defaults: a client sends
  only the fields it changes.
- The links a view declares (``openapi_links``, made with
  :func:`config.api.links`): which operations an answer leads to, with the
  values it gives them (generated clients and Schemathesis follow them).
- Operation ids are identifiers (``dept_codes_image_png_retrieve``, not
  ``…image.png…``), as links and generated clients name them.
- A path that ends in a file extension (``image.png``, ``receipt.svg``)
  answers that media type only, though its view renders several.
- What a request's body can be refused with: 413 wherever a body can be
  sent (the middleware counts it before any view); 400 (``invalid``,
  ``malformed_request``) only where the operation takes a JSON body (a
  view that reads no body, or the channels' callbacks, never parse one);
  and 415 only where the view's negotiation refuses a body that is not
  JSON (the scanners' views read every body as JSON: 400).

Apart from :mod:`config.api` because that module is loaded while DRF reads
its settings, and this one imports DRF's views.
"""

from __future__ import annotations

import mimetypes
import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import translation
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import is_patched_serializer
from rest_framework.request import Request
from rest_framework.response import Response

from config.errors import (
    ERROR_CODES,
    INVALID,
    PAYLOAD_TOO_LARGE,
    PROBLEM_CONTENT_TYPE,
    THROTTLED,
    UNSUPPORTED_MEDIA_TYPE,
)

PROBLEM_REF = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


class AutoSchema(SpectacularAutoSchema):
    def _is_list_view(self, serializer: Any = None) -> bool:
        if serializer is None:
            # drf-spectacular takes the answer with the smallest key as the
            # main one; a problem's key, "(400, 'application/problem+json')",
            # sorts before "200". The main answer is the success.
            answers = self.get_response_serializers()
            if isinstance(answers, dict):
                success = [s for code, s in answers.items() if str(code).startswith("2")]
                if success:
                    serializer = success[0]
        return super()._is_list_view(serializer)

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        if is_patched_serializer(serializer, direction):
            # A partial update changes what it names and nothing else: a
            # default here makes a generated client send it, and so reset
            # the field (an endpoint's description, a paused endpoint).
            for field in schema.get("properties", {}).values():
                field.pop("default", None)
        return schema

    def get_operation_id(self) -> str:
        # Named from the path, "image.png" made "dept_codes_image.png_retrieve":
        # an identifier in no generated client's language.
        return super().get_operation_id().replace(".", "_")

    def get_auth(self) -> list[dict[str, list[str]]]:
        auths = super().get_auth()
        admitted: set[str] | None = None
        for permission in self.view.get_permissions():
            schemes = getattr(permission, "security_schemes", None)
            if schemes is not None:
                admitted = set(schemes) if admitted is None else admitted & set(schemes)
        if admitted is not None:
            auths = [a for a in auths if not a or set(a) <= admitted]
        if all(not a for a in auths):
            return []  # public: no security requirement
        return auths

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        for declared in getattr(self.view, "openapi_links", {}).get(self.method.lower(), []):
            for status, links in declared.items():
                responses[status].setdefault("links", {}).update(links)
        own_type = mimetypes.guess_type(self.path)[0]
        if own_type is not None:
            # One view renders image.png and image.svg: each path answers
            # its own media type only.
            for response in responses.values():
                content = response.get("content", {})
                if own_type in content:
                    response["content"] = {own_type: content[own_type]}
        refusals = [getattr(p, "code", None) for p in self.view.get_permissions()]
        throttles = getattr(self.view, "throttle_classes", None) or []
        if any(
            getattr(throttle, "methods", None) is None or self.method.upper() in throttle.methods
            for throttle in throttles
        ):
            refusals.append(THROTTLED.code)
        for code in refusals:
            error = ERROR_CODES.get(code or "")
            if error is None:
                continue
            status = str(error.status)
            described = f"`{error.code}`: {error.title}"
            if status not in responses:
                responses[status] = {"description": described, "content": PROBLEM_REF}
            elif f"`{error.code}`" not in responses[status].get("description", ""):
                responses[status]["description"] += f"; {described}"
        if "429" in responses:
            responses["429"].setdefault("headers", {})["Retry-After"] = {
                "description": "Seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 0},
            }
        for status, described in self._body_refusals(operation).items():
            if status in responses:
                existing = responses[status].get("description", "")
                responses[status]["description"] = f"{existing}; {described}".strip("; ")
            else:
                responses[status] = {"description": described, "content": PROBLEM_REF}
        return operation

    def _body_refusals(self, operation: dict[str, Any]) -> dict[str, str]:
        if self.method.lower() not in ("post", "put", "patch"):
            return {}
        refusals = {"413": f"`payload_too_large`: {PAYLOAD_TOO_LARGE.title}"}
        if list(operation.get("requestBody", {}).get("content", {})) != ["application/json"]:
            return refusals
        refusals["400"] = f"`invalid`, `malformed_request`: {INVALID.title}"
        not_json = HttpRequest()
        not_json.method, not_json.META["CONTENT_TYPE"] = "POST", "text/plain"
        negotiator = self.view.get_content_negotiator()
        if negotiator.select_parser(Request(not_json), self.view.get_parsers()) is None:
            refusals["415"] = f"`unsupported_media_type`: {UNSUPPORTED_MEDIA_TYPE.title}"
        return refusals


# --- /api/schema/ ------------------------------------------------------------------------------

# The generated schemas of this process, by language and API version. A
# schema is the code's and the settings' (the same for every caller, host
# and scheme: it names no server); it changes with a deploy, or with a
# setting a test changes (ROOT_URLCONF, SPECTACULAR_SETTINGS, ...).
_schemas: dict[tuple[str, str | None], dict[str, Any]] = {}
_generating = threading.Lock()


def forget_schemas() -> None:
    """Generate every schema again on its next request (tests)."""
    _schemas.clear()


@receiver(setting_changed)
def _settings_changed(**kwargs: Any) -> None:
    forget_schemas()


class KeptSchema:
    """Makes drf-spectacular's ``SpectacularAPIView`` generate its schema
    once per language in each process (it took 0.1 to 0.4 s of CPU on every
    request, from anyone, with no login); each request renders (YAML or
    JSON) the kept one. A mixin, as this module cannot import drf-spectacular's
    views: they load DRF's settings, whose DEFAULT_SCHEMA_CLASS is above."""

    api_version: str | None
    generator_class: Any
    urlconf: Any
    patterns: Any
    serve_public: bool

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # ``?lang=`` takes any text, which drf-spectacular's get() activates
        # as it is (Django keeps a catalog per name for good): the closest
        # language the site speaks, or its own, is asked for instead, so
        # that every request is answered by a kept schema. (Here, not in an
        # own get(): the schema of the view's get() is drf-spectacular's.)
        asked = request.GET.get("lang")
        if asked:
            try:
                spoken = translation.get_supported_language_variant(asked)
            except LookupError:
                spoken = settings.LANGUAGE_CODE
            if spoken != asked:
                query = request._request.GET.copy()
                query["lang"] = spoken
                request._request.GET = query  # type: ignore[assignment]  # a mutable copy in its place
        super().initial(request, *args, **kwargs)  # type: ignore[misc]  # APIView's

    def _get_version_parameter(self, request: Request) -> None:
        # The API has one version, in its paths: ``?version=`` took any
        # text, each a schema generated and kept (about 3 MB) for good.
        return None

    def _get_schema_response(self, request: Request) -> Response:
        language = translation.get_language()
        if language not in dict(settings.LANGUAGES):
            # Not reached through get() above; never kept.
            return super()._get_schema_response(request)  # type: ignore[misc]  # SpectacularAPIView's
        version = self.api_version or request.version
        key = (language, version)
        schema = _schemas.get(key)
        if schema is None:
            # One generation at a time: requests that come meanwhile wait
            # for it rather than each doing it again.
            with _generating:
                schema = _schemas.get(key)
                if schema is None:
                    generator = self.generator_class(
                        urlconf=self.urlconf, api_version=version, patterns=self.patterns
                    )
                    schema = generator.get_schema(request=request, public=self.serve_public)
                    _schemas[key] = schema
        return Response(
            data=schema,
            headers={
                "Content-Disposition": f'inline; filename="{self._get_filename(request, version)}"'  # type: ignore[attr-defined]
            },
        )
