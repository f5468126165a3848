"""DKIM signatures (RFC 6376, relaxed/relaxed), RSA-SHA256 and Ed25519-SHA256 (RFC 8463).

The private-key work goes to OpenSSL through `cryptography`; the rest is a few
byte operations per message. The signed header set covers everything a reader
trusts, and the headers a forger would most like to add (a second From or
Subject, another unsubscribe link) are oversigned: listed once more than they
appear, so any added copy breaks the signature.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from .config import DKIMSettings
from .errors import ConfigError
from .mail import CleanMessage

SIGNED = ("from", "to", "subject", "date", "message-id", "reply-to", "mime-version", "content-type",
          "list-id", "list-unsubscribe", "list-unsubscribe-post")
OVERSIGNED = frozenset({"from", "subject", "list-unsubscribe", "list-unsubscribe-post"})
MIN_RSA_BITS = 1024  # RFC 8301: verifiers must reject shorter keys

_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.M)  # a header field's name, at the start of its line
_WSP_RUN = re.compile(rb"[ \t]+")


def relaxed_body(body: bytes) -> bytes:
    """The body in the relaxed canonical form; a body already in that form is returned as it is."""
    # bytes.replace runs at memory speed, where a regular expression would cost more
    # than the RSA signature.
    if b"\t" in body or b"  " in body or b" \r\n" in body:
        body = body.replace(b"\t", b" ")
        while b"  " in body:
            body = body.replace(b"    ", b" ").replace(b"  ", b" ")
        while b" \r\n" in body:
            body = body.replace(b" \r\n", b"\r\n")
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """One header field in the relaxed canonical form, with its CRLF."""
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip().lower() + b":" + value + b"\r\n"


def split_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """(name, raw value) of each field of HEAD (the bytes before the blank line), in order."""
    starts = list(_FIELD.finditer(head))
    fields = []
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(head)
        fields.append((match.group(1), head[match.end():end].removesuffix(b"\r\n")))
    return fields


@functools.lru_cache(maxsize=64)
def _folded(tags: tuple[str, ...]) -> str:
    """The start of a DKIM-Signature field: TAGS in lines of at most 76 characters.

    The h= list may break after a colon (RFC 6376 allows folding whitespace
    there). Only the tags every message of one kind shares come here, so
    each layout is worked out once.
    """
    pieces = []
    for tag in tags:
        if tag.startswith("h="):
            *names, last = tag.split(":")
            pieces += [name + ":" for name in names] + [last]
        else:
            pieces.append(tag)
    lines, line, previous = [], "DKIM-Signature:", ""
    for piece in pieces:
        separator = "" if previous.endswith(":") else " "
        if len(line) + len(separator) + len(piece) > 76:
            lines.append(line)
            line = " " + piece
        else:
            line += separator + piece
        previous = piece
    return "\r\n".join([*lines, line])


def _field(fixed: str, timestamp: int, bh: str, b: str) -> bytes:
    """The whole field; with B empty, the text that is hashed (b= last, so nothing else moves)."""
    lines = [f"{fixed}\r\n t={timestamp}; bh={bh};\r\n b={b[:73]}"]
    lines += [" " + b[start:start + 75] for start in range(73, len(b), 75)]
    return "\r\n".join(lines).encode("ascii")


@dataclass(frozen=True)
class _Key:
    algorithm: str  # the a= tag
    selector: str
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self.private.sign(hashlib.sha256(data).digest())  # RFC 8463 signs the hash

    def public_record(self) -> str:
        """The TXT record a verifier looks up at SELECTOR._domainkey.DOMAIN."""
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()


def load_key(path: Path, selector: str, *, key: str, ed25519_only: bool = False) -> _Key:
    """The private key in PATH, or a ConfigError naming KEY that says in one line what is wrong."""
    def error(reason: str) -> ConfigError:
        return ConfigError("feedpub.yaml", key, f"{path.name}: {reason}")

    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise error("no such file") from None
    except OSError as exc:
        raise error(f"cannot read it ({exc.strerror})") from None
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise error("the key is protected by a password; DKIM needs it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise error("not a PEM private key (expected '-----BEGIN PRIVATE KEY-----')") from None
    if ed25519_only and not isinstance(private, ed25519.Ed25519PrivateKey):
        raise error("not an Ed25519 key (make one with: openssl genpkey -algorithm ed25519)")
    if isinstance(private, ed25519.Ed25519PrivateKey):
        if not ed25519_only:  # many receivers cannot verify Ed25519 yet: it only goes beside RSA
            raise error("an Ed25519 key: key_file takes the RSA key, ed25519_key_file this one")
        return _Key("ed25519-sha256", selector, private)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise error("DKIM keys are RSA or Ed25519")
    if private.key_size < MIN_RSA_BITS:
        raise error(f"a {private.key_size}-bit RSA key is too short; verifiers refuse keys under "
                    f"{MIN_RSA_BITS} bits (make one of 2048)")
    return _Key("rsa-sha256", selector, private)


class DKIMSigner:
    """Signs whole messages (CRLF line ends, as feedpub writes them) for one domain.

    `sign(message)` returns the message with one DKIM-Signature field per key
    on top; the body is canonicalized and hashed once for all keys. Safe to
    share between threads.
    """

    def __init__(self, domain: str, keys: list[_Key], *, clock=time.time) -> None:
        self.domain, self.keys, self.clock = domain, keys, clock

    @staticmethod
    def _body_hash(body: bytes, *, canonical: bool) -> str:
        # Each reader's copy has its own links, so bodies repeat only between a message's
        # signatures: both keys share one hash. Telling a repeated body from a new one
        # across messages would cost as much as hashing it (0.05 ms for 100 KB).
        if canonical:  # only the end needs the canonical treatment
            stripped = body.rstrip(b"\r\n")
            body = stripped + b"\r\n" if stripped else b""
        else:
            body = relaxed_body(body)
        return base64.b64encode(hashlib.sha256(body).digest()).decode()

    def sign(self, message: bytes) -> bytes:
        head, separator, body = message.partition(b"\r\n\r\n")
        if not separator:
            head, body = message.removesuffix(b"\r\n"), b""
        fields = split_headers(head + b"\r\n")
        by_name: dict[bytes, list[bytes]] = {}
        for name, value in fields:
            by_name.setdefault(name.lower(), []).append(value)
        names, signed = [], []
        for name in SIGNED:
            present = by_name.get(name.encode(), [])
            # Fields are taken from the bottom up (RFC 6376 5.4.2); one more than
            # present signs "no further field of this name".
            count = len(present) + (name in OVERSIGNED) if present else 1
            names.extend([name] * count)
            for value in reversed(present):
                signed.append(relaxed_header(name.encode(), value))
        bh = self._body_hash(body, canonical=isinstance(message, CleanMessage))
        signatures, timestamp, headers = [], int(self.clock()), b"".join(signed)
        for key in self.keys:
            fixed = _folded(("v=1;", f"a={key.algorithm};", "c=relaxed/relaxed;", f"d={self.domain};",
                             f"s={key.selector};", f"h={':'.join(names)};"))
            _name, _, value = _field(fixed, timestamp, bh, "").partition(b":")
            data = headers + relaxed_header(b"dkim-signature", value).removesuffix(b"\r\n")
            b = base64.b64encode(key.sign(data)).decode()
            signatures.append(_field(fixed, timestamp, bh, b) + b"\r\n")
        signed = b"".join(signatures) + message
        return CleanMessage(signed) if isinstance(message, CleanMessage) else signed


def make_signer(settings: DKIMSettings | None) -> DKIMSigner | None:
    """The site's signer, or None when it does not sign; a bad key is a ConfigError."""
    if settings is None:
        return None
    keys = [load_key(settings.key_file, settings.selector, key="email.dkim.key_file")]
    if settings.ed25519_key_file is not None:
        keys.append(load_key(settings.ed25519_key_file, settings.ed25519_selector,
                             key="email.dkim.ed25519_key_file", ed25519_only=True))
    return DKIMSigner(settings.domain, keys)
