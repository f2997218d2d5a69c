"""Star-code API: the citizen's code, scanners, venue codes, public keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import (
    ApiKeyAuthentication,
    CitizenRequest,
    DepartmentRequest,
    IsCitizen,
    IsIntegrator,
    IsScanner,
)
from accounts.models import Department
from config.api import (
    AnyAccept,
    FeedPagination,
    FixedWindowThrottle,
    PagePagination,
    client_ip,
    flatten_errors,
    links,
    paginated,
    problems,
)
from qr import keys, rendering, scans, selectors, star_codes, venue_codes
from qr.authentication import ScannerKeyAuthentication
from qr.codes import Kind
from qr.errors import CODE_INVALID, SINCE_INVALID, QrError
from qr.models import VenueCode
from qr.scans import OfflineScan
from qr.serializers import (
    CODE_FIELD_MAX_LENGTH,
    CodeInSerializer,
    JwksSerializer,
    MyScanSerializer,
    ResolvedSerializer,
    RevocationsSerializer,
    ScanUploadResultSerializer,
    ScanUploadSerializer,
    StarCodeSerializer,
    VenueCodeCreateSerializer,
    VenueCodeSerializer,
    VerifyResultSerializer,
)

IMAGE_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


class StarCodeThrottle(FixedWindowThrottle):
    """Per citizen, in fixed windows: one counter increment per issuance
    (every app refreshes its code about once a minute)."""

    scope = "qr_star_code"

    def get_rate(self) -> str:
        return settings.QR_STAR_CODE_RATE

    def get_ident(self, request: Any) -> str:
        return str(request.user.pk)


class ScanUploadThrottle(FixedWindowThrottle):
    """Offline scan batches per scanner key, in fixed windows (a terminal
    back online sends what it kept, a batch of up to 500 at a time)."""

    scope = "qr_scan_upload"

    def get_rate(self) -> str:
        return settings.QR_SCAN_UPLOAD_RATE

    def get_ident(self, request: Any) -> str:
        return str(request.auth.pk)


class ResolveThrottle(FixedWindowThrottle):
    """Per client address, in fixed windows: one atomic count a request, so
    requests sent side by side cannot all pass on the same reading (as
    they did DRF's rate, which reads the history and writes it back)."""

    scope = "qr_resolve"

    def get_rate(self) -> str:
        return settings.QR_RESOLVE_RATE


def _image_response(body: bytes, fmt: str, *, filename: str | None = None) -> HttpResponse:
    response = HttpResponse(body, content_type=IMAGE_TYPES[fmt])
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    if filename:
        response["Content-Disposition"] = f'inline; filename="{filename}.{fmt}"'
    return response


_IMAGE_RESPONSES = {
    (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="PNG"),
    (200, "image/svg+xml"): OpenApiResponse(OpenApiTypes.STR, description="SVG"),
}


# --- Public keys ----------------------------------------------------------------------


class KeysView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    content_negotiation_class = AnyAccept

    @extend_schema(
        tags=["star-code"],
        summary="Public keys (JWKS) that star-codes and venue codes are signed with",
        description=(
            "Standard JSON Web Key Set (RFC 7517; OKP/Ed25519 keys of RFC 8037): the "
            "active key, upcoming keys (published before they sign) and retired keys "
            "whose codes may still be valid. Cacheable; conditional GET with ETag."
        ),
        responses={
            (200, "application/jwk-set+json"): JwksSerializer,
            304: OpenApiResponse(description="Not modified"),
        },
    )
    def get(self, request: Request) -> Response:
        keys.keyring_ensure()  # a fresh installation publishes its first key
        body = selectors.jwks()
        etag = (
            '"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32] + '"'
        )
        headers = {
            "Cache-Control": f"public, max-age={settings.QR_JWKS_MAX_AGE}",
            "ETag": etag,
        }
        if _etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(body, headers=headers, content_type="application/jwk-set+json")


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match as HTTP compares it (RFC 9110 13.1.2): a list of tags,
    or ``*``; weakly, so a tag a compressing proxy marked ``W/`` still
    matches."""
    tags = parse_etags(if_none_match) if if_none_match else []
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


# --- The citizen's own code -------------------------------------------------------------


class StarCodeView(APIView):
    permission_classes = [IsCitizen]
    throttle_classes = [StarCodeThrottle]
    # Reads only the account's state, subject and level (accounts.token_facts.FIELDS).
    citizen_from_token = True

    @extend_schema(
        tags=["star-code"],
        summary="My star-code (a new one on each call)",
        responses={200: StarCodeSerializer, **problems("throttled")},
    )
    def get(self, request: CitizenRequest) -> Response:
        issued = star_codes.star_code_issue(user=request.user)
        return Response(star_code_answer(issued), headers={"Cache-Control": STAR_CODE_CACHE})


STAR_CODE_CACHE = "no-store, private"


def star_code_answer(issued: star_codes.IssuedCode) -> dict[str, Any]:
    """The body of an issuance (:class:`StarCodeSerializer`'s shape; the view
    and :mod:`qr.fastpath` alike): times in the local zone, as every time
    this API gives."""
    return {
        "code": issued.code,
        "expires_at": timezone.localtime(issued.expires_at).isoformat(),
        "refresh_after": timezone.localtime(issued.refresh_after).isoformat(),
    }


class StarCodeImageView(APIView):
    permission_classes = [IsCitizen]
    throttle_classes = [StarCodeThrottle]
    content_negotiation_class = AnyAccept

    @extend_schema(
        tags=["star-code"],
        summary="My star-code as an image (a new code on each call)",
        responses={**_IMAGE_RESPONSES, **problems("throttled")},
    )
    def get(self, request: CitizenRequest, fmt: str) -> HttpResponse:
        issued = star_codes.star_code_issue(user=request.user)
        body = rendering.png(issued.code) if fmt == "png" else rendering.svg(issued.code)
        return _image_response(body, fmt)


class MyScansView(APIView):
    permission_classes = [IsCitizen]

    class Pagination(FeedPagination):
        ordering = ("-scanned_at", "-id")

    pagination_class = Pagination

    @extend_schema(
        tags=["star-code"],
        summary="Where and when my star-code was scanned, newest first",
        responses={200: MyScanSerializer(many=True)},
    )
    def get(self, request: CitizenRequest) -> Response:
        return paginated(
            request,
            self,
            selectors.scans_of(request.user),
            MyScanSerializer,
        )


# --- Scanners ----------------------------------------------------------------------------------


class ScannerView(APIView):
    request: DepartmentRequest
    authentication_classes = [ScannerKeyAuthentication]
    permission_classes = [IsScanner]
    # JSON only, whatever a terminal's Accept says (and no negotiation cost per scan).
    content_negotiation_class = AnyAccept


class VerifyView(ScannerView):
    @extend_schema(
        tags=["scanner"],
        summary="Verify a scanned code (every call is a scan event)",
        description=(
            "Always 200 for a scanned code, valid or not; the reasons are `malformed`, "
            "`bad_signature`, `unknown_key`, `expired`, `not_yet_valid`, `revoked`, "
            "`replayed` (this key already verified this code) and `account_inactive`. "
            "The subject is disclosed as the key's profile allows."
        ),
        request=CodeInSerializer,
        responses={
            200: VerifyResultSerializer,
            **problems("api_key_scope", "throttled", "scan_state_unavailable"),
        },
    )
    def post(self, request: DepartmentRequest) -> Response:
        verdict = scans.scan_verify(scanner=request.auth, text=_scanned_text(request.data))
        return Response(verify_answer(verdict))


def verify_answer(verdict: scans.Verdict) -> dict[str, Any]:
    """The body of a verify answer (the view and :mod:`qr.fastpath` alike)."""
    reason, claims = verdict.reason, verdict.claims
    if reason is not None:  # a verdict is valid exactly when it gives no reason
        return {"valid": False, "reason": reason.value}
    assert claims is not None  # a valid verdict carries the code's claims
    subject: dict[str, Any] = {"id": claims.sub, "identity_level": claims.lvl}
    if verdict.discloses_name and claims.knd is Kind.CITIZEN:
        subject["name_masked"] = verdict.name_masked
    expires_at = None
    if claims.exp is not None:
        expires_at = timezone.localtime(dt.datetime.fromtimestamp(claims.exp, tz=dt.UTC))
    return {
        "valid": True,
        "kind": claims.knd.value,
        "subject": subject,
        "expires_at": expires_at.isoformat() if expires_at else None,
    }


def _scanned_text(data: Any) -> str:
    """The ``code`` of a verify request. The common case is checked inline
    (this runs per passenger at a gate); anything unusual goes through the
    serializer, which words the 400."""
    code = data.get("code") if isinstance(data, dict) else None
    if (
        isinstance(code, str)
        and 0 < len(code) <= CODE_FIELD_MAX_LENGTH
        and code.isprintable()
        and not code[0].isspace()
        and not code[-1].isspace()
    ):
        return code
    serializer = CodeInSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data["code"]


_OFFSET_AFTER_SPACE = re.compile(r"(\d) (\d\d(?::?\d\d)?)$")


def _parse_since(raw: str | None) -> dt.datetime | None:
    if raw is None or raw == "":
        return None
    # An unencoded "+08:00" in a query string arrives as " 08:00".
    text = _OFFSET_AFTER_SPACE.sub(r"\1+\2", raw.strip())
    try:
        value = parse_datetime(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise QrError(SINCE_INVALID, errors={"since": [str(SINCE_INVALID.title)]})
    # Nothing was revoked before the service existed, nor tomorrow; times
    # at the ends of the calendar would overflow the arithmetic.
    if not SINCE_EARLIEST <= value <= timezone.now() + dt.timedelta(days=1):
        raise QrError(SINCE_INVALID, errors={"since": [str(SINCE_INVALID.title)]})
    # In UTC: an offset the database cannot hold (PostgreSQL stops at
    # ±15:59) names the same instant there.
    return value.astimezone(dt.UTC)


SINCE_EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class RevocationsView(ScannerView):
    @extend_schema(
        tags=["scanner"],
        summary="Revoked codes and deactivated subjects since a time (offline terminals)",
        parameters=[
            OpenApiParameter(
                "since",
                OpenApiTypes.DATETIME,
                description="ISO 8601 with offset; the `until` of the previous answer. "
                "Omitted: everything.",
            )
        ],
        responses={200: RevocationsSerializer, **problems("since_invalid", "api_key_scope")},
    )
    def get(self, request: Request) -> Response:
        since = _parse_since(request.query_params.get("since"))
        revocations = selectors.revocations_since(since)
        return Response(RevocationsSerializer(revocations).data)


class ScanUploadView(ScannerView):
    throttle_classes = [ScanUploadThrottle]
    # A full batch of real codes is over the API's general bound.
    max_body_setting = "QR_SCAN_UPLOAD_MAX_BYTES"

    @extend_schema(
        tags=["scanner"],
        summary="Upload scans made offline (idempotent on each event_id)",
        description="Batches per scanner key: `QR_SCAN_UPLOAD_RATE` (60 a minute).",
        request=ScanUploadSerializer,
        responses={200: ScanUploadResultSerializer, **problems("api_key_scope", "throttled")},
    )
    def post(self, request: DepartmentRequest) -> Response:
        serializer = ScanUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        uploaded = [
            OfflineScan(
                event_id=item["event_id"],
                code=item["code"],
                scanned_at=item["scanned_at"],
                valid=item["valid"],
                reason=item["reason"],
            )
            for item in serializer.validated_data["scans"]
        ]
        results = scans.offline_scans_upload(scanner=request.auth, scans=uploaded)
        recorded = sum(1 for r in results if r["status"] == "recorded")
        return Response(
            {"recorded": recorded, "duplicates": len(results) - recorded, "scans": results}
        )


class ResolveView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ResolveThrottle]

    @extend_schema(
        tags=["star-code"],
        summary="What a scanned venue code opens",
        request=CodeInSerializer,
        responses={
            200: ResolvedSerializer,
            **problems("code_invalid", "code_revoked", "throttled"),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = CodeInSerializer(data=request.data)
        if not serializer.is_valid():
            # DESIGN §5: anything but a valid or a deactivated venue code is
            # `code_invalid`; the app switches on one code for "not ours",
            # whatever its scanner read (nothing, blanks, a page of text).
            raise QrError(CODE_INVALID, errors=flatten_errors(serializer.errors))
        venue = venue_codes.venue_code_resolve(text=serializer.validated_data["code"])
        return Response(
            {
                "kind": "venue",
                "service": {"code": venue.service.code, "name": venue.service.name},
                "label": venue.label,
                "location": venue.location,
            }
        )


# --- Department: venue codes ---------------------------------------------------------------------


class DeptCodesView(APIView):
    request: DepartmentRequest
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsIntegrator]

    @property
    def department(self) -> Department:
        return self.request.auth.department

    def get_venue(self, code_id: Any) -> VenueCode:
        venue = selectors.venue_code_of(self.department, code_id)
        if venue is None:
            raise Http404
        return venue


class DeptCodeListView(DeptCodesView):
    pagination_class = PagePagination
    openapi_links = {
        "get": [
            links(
                200,
                "dept_codes_retrieve",
                "dept_codes_image_png_retrieve",
                "dept_codes_image_svg_retrieve",
                "dept_codes_deactivate_create",
                code_id="$response.body#/results/0/id",
            )
        ],
        "post": [
            links(
                201,
                "dept_codes_retrieve",
                "dept_codes_image_png_retrieve",
                "dept_codes_image_svg_retrieve",
                "dept_codes_deactivate_create",
                code_id="$response.body#/id",
            )
        ],
    }

    @extend_schema(
        tags=["dept: codes"],
        summary="My department's venue codes, newest first",
        operation_id="dept_codes_list",
        parameters=[
            OpenApiParameter("service", str, description="Only codes of this service code"),
            OpenApiParameter("is_active", bool),
        ],
        responses={200: VenueCodeSerializer(many=True), **problems("api_key_scope")},
    )
    def get(self, request: Request) -> Response:
        venues = selectors.venue_codes_of(self.department)
        service = request.query_params.get("service")
        if service:
            venues = venues.filter(service__code=service)
        active = request.query_params.get("is_active", "").lower()
        if active in ("true", "1"):
            venues = venues.filter(deactivated_at__isnull=True)
        elif active in ("false", "0"):
            venues = venues.filter(deactivated_at__isnull=False)
        return paginated(request, self, venues, VenueCodeSerializer)

    @extend_schema(
        tags=["dept: codes"],
        summary="Create a venue code for one of my department's services",
        request=VenueCodeCreateSerializer,
        responses={201: VenueCodeSerializer, **problems("api_key_scope")},
    )
    def post(self, request: DepartmentRequest) -> Response:
        serializer = VenueCodeCreateSerializer(
            data=request.data, context={"department": self.department}
        )
        serializer.is_valid(raise_exception=True)
        venue = venue_codes.venue_code_create(
            department=self.department,
            actor=request.auth,
            ip=client_ip(request),
            **serializer.validated_data,
        )
        return Response(VenueCodeSerializer(venue).data, status=status.HTTP_201_CREATED)


class DeptCodeDetailView(DeptCodesView):
    @extend_schema(
        tags=["dept: codes"],
        summary="One of my department's venue codes",
        responses={200: VenueCodeSerializer, **problems("not_found")},
    )
    def get(self, request: Request, code_id: str) -> Response:
        return Response(VenueCodeSerializer(self.get_venue(code_id)).data)


class DeptCodeImageView(DeptCodesView):
    content_negotiation_class = AnyAccept

    @extend_schema(
        tags=["dept: codes"],
        summary="A venue code as PNG, or as print-ready SVG (60 mm wide, with its caption)",
        responses={**_IMAGE_RESPONSES, **problems("not_found")},
    )
    def get(self, request: Request, code_id: str, fmt: str) -> HttpResponse:
        venue = self.get_venue(code_id)
        if fmt == "png":
            body = rendering.png(venue.code, error_correction=rendering.PRINT, box_size=10)
        else:
            body = rendering.svg(
                venue.code,
                error_correction=rendering.PRINT,
                caption=[venue.service.name, venue.label, venue.location],
            )
        return _image_response(body, fmt, filename=f"venue-code-{venue.pk}")


class DeptCodeDeactivateView(DeptCodesView):
    @extend_schema(
        tags=["dept: codes"],
        summary="Deactivate a venue code for good (it then resolves as revoked)",
        request=None,
        responses={200: VenueCodeSerializer, **problems("not_found")},
    )
    def post(self, request: DepartmentRequest, code_id: str) -> Response:
        venue = venue_codes.venue_code_deactivate(
            venue=self.get_venue(code_id), actor=request.auth, ip=client_ip(request)
        )
        return Response(VenueCodeSerializer(venue).data)
