"""Envelope senders that name their delivery row (VERP), so a bounce finds its reader.

With `email.return_path: bounces@news.example.org` each message leaves with
the envelope sender `bounces+<row>.<mac>@news.example.org`: the row's id in
hexadecimal and a short keyed MAC of it, in lowercase only, because some
mail systems change the case of a local part. A report that arrives for that
address names its row even when its text quotes nothing useful; a forged or
mangled one names none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

MAC_BYTES = 8  # 64 bits: forging a row's address takes 2**63 tries on average
MAX_LOCAL_PART = 64  # RFC 5321
_TAG = re.compile(r"^(?P<base>[^+@]+)\+(?P<row>[0-9a-f]{1,12})\.(?P<mac>[a-z2-7]{13})@(?P<domain>[^@]+)$")
LONGEST_TAG = 1 + 12 + 1 + 13  # "+", the row, ".", the MAC


class Verp:
    """Makes and reads the per-row envelope senders of one return path."""

    def __init__(self, return_path: str, key: str) -> None:
        self.base, _, self.domain = return_path.rpartition("@")
        self._key = hmac.new(key.encode(), b"feedpub verp", hashlib.sha256).digest()  # not the links' key

    def _mac(self, row: int) -> str:
        digest = hmac.new(self._key, f"{row:x}".encode(), hashlib.sha256).digest()[:MAC_BYTES]
        return base64.b32encode(digest).decode().rstrip("=").lower()

    def address(self, row: int) -> str:
        return f"{self.base}+{row:x}.{self._mac(row)}@{self.domain}"

    def row(self, address: str) -> int | None:
        """The delivery row ADDRESS was made for; None when it is not one of ours or was altered."""
        match = _TAG.match(address.strip().strip("<>").lower())
        if match is None or match["base"] != self.base.lower() or match["domain"] != self.domain.lower():
            return None
        row = int(match["row"], 16)
        return row if hmac.compare_digest(match["mac"], self._mac(row)) else None


def local_part_problem(return_path: str) -> str | None:
    """Why RETURN_PATH leaves no room for the row's tag in a 64-character local part; None when it does."""
    local = return_path.rpartition("@")[0]
    if "+" in local:
        return f"{return_path!r}: the local part must not hold '+', which starts each message's own tag"
    if len(local) + LONGEST_TAG > MAX_LOCAL_PART:
        return (f"{return_path!r}: a local part of at most {MAX_LOCAL_PART - LONGEST_TAG} characters "
                f"leaves room for each message's tag")
    return None
