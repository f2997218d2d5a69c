"""How callers prove who they are: citizens by JWT, departments by API key."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts import token_facts
from accounts.api_keys import api_key_authenticate
from accounts.errors import API_KEY_INVALID, API_KEY_SCOPE, CITIZEN_REQUIRED
from accounts.models import ApiKey, ApiKeyScope, Department, User


class CitizenRequest(Request):
    """The request a view guarded by ``IsCitizen`` receives: for the type checker only."""

    user: User


class DepartmentRequest(Request):
    """The request a view guarded by ``IsIntegrator``/``IsScanner`` receives: for the
    type checker only."""

    auth: ApiKey


class CitizenJWTAuthentication(JWTAuthentication):
    """``Authorization: Bearer <access token>`` from ``/api/v1/auth/token/``.

    A hot view that reads nothing of the citizen but
    :data:`accounts.token_facts.FIELDS` says so with ``citizen_from_token =
    True``: the token vouches for them unless the account changed since it
    was made (``accounts.token_facts``), and the other columns stay deferred."""

    www_authenticate_realm = "api"
    _from_token = False

    def authenticate(self, request: Request) -> Any:
        view = (request.parser_context or {}).get("view")
        self._from_token = bool(getattr(view, "citizen_from_token", False))
        return super().authenticate(request)

    def get_user(self, validated_token: Any) -> Any:
        if not self._from_token:
            return super().get_user(validated_token)
        try:
            user = token_facts.citizen_from_token(validated_token)
        except (ValueError, ValidationError):
            user = None
        # Otherwise the row, as JWTAuthentication reads it.
        return user if user is not None else super().get_user(validated_token)


class ApiKeyPrincipal:
    """``request.user`` for a request signed with an API key."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, key: ApiKey) -> None:
        self.api_key = key
        self.department: Department = key.department

    def __str__(self) -> str:
        return f"{self.department.code}:mcs_{self.api_key.prefix}"


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key mcs_<prefix>_<secret>``: a department's key."""

    keyword = b"api-key"

    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(API_KEY_INVALID.title, code=API_KEY_INVALID.code)
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raw = ""
        key = api_key_authenticate(raw)
        if key is None:
            raise exceptions.AuthenticationFailed(API_KEY_INVALID.title, code=API_KEY_INVALID.code)
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Api-Key realm="api"'


class IsCitizen(BasePermission):
    """A signed-in person (JWT), not a department's key."""

    message = CITIZEN_REQUIRED.title
    code = CITIZEN_REQUIRED.code
    # The schema's only way in (config.openapi): a department's key authenticates
    # but is refused here.
    security_schemes = ("CitizenJWT",)

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return isinstance(user, User) and user.is_authenticated and user.is_active


class _HasScope(BasePermission):
    scope: ApiKeyScope
    message = API_KEY_SCOPE.title
    code = API_KEY_SCOPE.code

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ApiKey) and request.auth.scope == self.scope


class IsIntegrator(_HasScope):
    """A department system's key (``integrator`` scope)."""

    scope = ApiKeyScope.INTEGRATOR


class IsScanner(_HasScope):
    """A scanner terminal's key (``scanner`` scope)."""

    scope = ApiKeyScope.SCANNER


class CitizenJWTScheme(SimpleJWTScheme):
    target_class = "accounts.authentication.CitizenJWTAuthentication"
    name = "CitizenJWT"


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": str(_("部门密钥：`Authorization: Api-Key mcs_<prefix>_<secret>`")),
        }
