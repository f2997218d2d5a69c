"""Identifiers for API-visible rows."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7).

    Opaque to clients, unguessable (74 random bits), and increasing with time
    so that new rows land at the end of the primary-key index.
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def uuid7_floor(at: dt.datetime) -> uuid.UUID:
    """The smallest version-7 UUID made at or after ``at``: ``id >= uuid7_floor(t)``
    lets the primary-key index find the rows created since ``t``."""
    millis = int(at.timestamp() * 1000)
    return uuid.UUID(int=((millis & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (0b10 << 62))
