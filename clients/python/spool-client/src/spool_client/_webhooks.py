"""Checking a webhook delivery's signature, in the receiver."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Mapping, Optional, Union


def verify_webhook(secret: Union[str, bytes], headers: Mapping[str, str], body: bytes, *,
                   tolerance_s: float = 300.0, now: Optional[float] = None) -> bool:
    """Whether a delivery came from Spool: its ``Spool-Webhook-Signature`` is HMAC-SHA256 with
    ``secret`` (yours from `Client.webhook_secret`) of ``Spool-Webhook-Timestamp + "." + body``,
    and that timestamp is within ``tolerance_s`` of ``now`` (default: this machine's clock), so a
    captured delivery cannot be replayed later. ``body`` is the raw request body as received
    (not re-encoded JSON); header names are matched in any case. Deduplicate what passes on
    ``Spool-Webhook-Id``: delivery is at least once."""
    # Anything malformed in the request — a header that is missing, not ASCII (a forger can send
    # any byte; servers decode headers as Latin-1), or not a string at all — is False, never an
    # exception. A body that is not bytes is the caller's mistake, said as such.
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError("verify_webhook: body must be the raw request body as bytes (a decoded str may not be what was signed)")
    lowered = {str(name).lower(): value for name, value in headers.items()}
    timestamp = lowered.get("spool-webhook-timestamp", "")
    signature = lowered.get("spool-webhook-signature", "")
    if not isinstance(timestamp, str) or not isinstance(signature, str):
        return False
    if not timestamp.isascii() or not signature.isascii():
        return False
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    key = secret.encode() if isinstance(secret, str) else secret
    expected = b"v1=" + hmac.new(key, timestamp.encode() + b"." + bytes(body), hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, signature.encode("ascii"))
