"""Offline star-code verification next to raw Ed25519, in the same run.

    .venv/bin/python benchmarks/qr.py [--count 20000] [--rounds 5]

What a scanner terminal (and ``POST /api/v1/qr/verify/``) runs on every
code: ``qr.codes.verify`` (strict base64url, header, claims, issuer, times,
signature) against a loop of bare Ed25519 verifications of the same
signatures over the same bytes by the primitive it runs (libsodium, through
PyNaCl). Rounds alternate (raw, ours); the median of the per-round ratios is
quoted. OpenSSL's verification (``cryptography``) of the same signatures is
printed beside it. No database, no server: the HTTP
paths are measured by ``benchmarks/hotpaths.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "https://my.changsha.gov.cn"
GOAL = 0.80


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    import django

    django.setup()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from nacl.signing import VerifyKey

    from qr import codes

    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    now = int(time.time())
    texts = [
        codes.sign(
            {
                "iss": ISSUER,
                "sub": f"s_{i:024x}",
                "iat": now,
                "exp": now + 60,
                "jti": f"{i:016x}",
                "lvl": 2,
                "knd": "citizen",
            },
            kid="bench",
            private_key=private,
        )
        for i in range(args.count)
    ]
    raw = []
    for text in texts:
        header, payload, signature = text[len(codes.PREFIX) :].split(".")
        raw.append((codes.b64url_decode(signature), f"{header}.{payload}".encode()))
    keys = {"bench": public}
    sodium = VerifyKey(public.public_bytes(Encoding.Raw, PublicFormat.Raw))
    pairs, openssl = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for signature, message in raw:
            sodium.verify(message, signature)
        floor = args.count / (time.perf_counter() - started)
        started = time.perf_counter()
        for text in texts:
            codes.verify(text, keys=keys, now=now, issuer=ISSUER)
        ours = args.count / (time.perf_counter() - started)
        pairs.append((floor, ours))
        started = time.perf_counter()
        for signature, message in raw:
            public.verify(signature, message)
        openssl.append(args.count / (time.perf_counter() - started))
    ratio = statistics.median(ours / floor for floor, ours in pairs)
    print(f"{args.rounds} alternating rounds of {args.count} verifications each; medians")
    print(
        f"{'raw libsodium Ed25519 verify (floor)':44} {statistics.median(f for f, _ in pairs):9.0f}/s"
    )
    print(f"{'raw OpenSSL Ed25519 verify (cryptography)':44} {statistics.median(openssl):9.0f}/s")
    print(
        f"{'qr.codes.verify':44} {statistics.median(o for _, o in pairs):9.0f}/s  "
        f"{ratio:.0%} of the floor (goal ≥ {GOAL:.0%}: {'met' if ratio >= GOAL else 'NOT met'})"
    )
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
