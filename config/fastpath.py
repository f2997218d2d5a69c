"""What the WSGI fast paths in front of Django share (qr's verify,
payments' callbacks): the headers Django's middleware and DRF put on an API
answer of a POST-only view, so a fast answer carries the same ones."""

from __future__ import annotations

# After Content-Type, in the order the full cycle writes them (the parity
# tests of each fast path compare them with the view's).
API_HEADERS = [
    ("Allow", "POST, OPTIONS"),
    ("X-Frame-Options", "DENY"),
    ("Vary", "Accept-Language"),
    ("Content-Language", "zh-hans"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
