"""Signed tokens for subscribers' personal links: unsubscribe, confirm.

A token names one subscriber (by id and address) and one list, and is signed
with the site's secret key: a token made for one address does not work for
another, and a changed token is refused.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .config import Site
from .errors import FeedpubError

SECRET_ENV = "FEEDPUB_SECRET_KEY"
# Hosts that can only be an example or a machine of one's own: there a key made
# on the spot is acceptable, so the bundled example works out of the box.
_EXAMPLE_HOSTS = ("localhost", "127.0.0.1", "example.org", "example.com", "example.net")


class BadToken(FeedpubError):
    """A link's token is forged, altered, for another purpose, or expired."""


@dataclass(frozen=True)
class TokenSubject:
    """Who and what a token is for. The address itself never appears in the token."""

    subscriber_id: int
    email: str
    list: str
    made_at: datetime | None = None  # when the token was signed (to the second), as read


KEY_FILE = "signing.key"


def is_example_site(site: Site) -> bool:
    """A site served on this machine or under an example domain: the bundled example and its copies."""
    host = urlsplit(site.base_url).hostname or ""
    return host in _EXAMPLE_HOSTS or host.endswith(tuple("." + h for h in _EXAMPLE_HOSTS))


def key_problem(site: Site, environ: Mapping[str, str]) -> str | None:
    """Why personal links could not be signed on SITE, in one line; None when they can."""
    if environ.get(SECRET_ENV) or is_example_site(site):
        return None
    return (f"{SECRET_ENV} is not set: a site's personal links (unsubscribe, confirm) must be signed with a "
            f"secret key of its own; set it in the service's environment, e.g. "
            f"{SECRET_ENV}=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")


def secret_key(site: Site, environ: Mapping[str, str]) -> str:
    """The key that signs personal links; refuses to run a real site without one.

    The example site gets a random key, made once and kept in state/: a key
    computed from anything public (its base_url, say) would let anyone forge
    its links.
    """
    key = environ.get(SECRET_ENV, "")
    if key:
        return key
    problem = key_problem(site, environ)
    if problem:
        raise FeedpubError(problem)
    return _kept_key(site.state_dir / KEY_FILE)


def _kept_key(path: Path) -> str:
    """The key in PATH, made there (mode 0600) by whichever process comes first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be between creating and writing it
            key = path.read_text(encoding="ascii").strip()
            if key:
                return key
            time.sleep(0.02)
        raise FeedpubError(f"{path}: the signing key file is empty; delete it to make a new one") from None
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key + "\n")
    return key


class Signer:
    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self._serializer = URLSafeTimedSerializer(key, salt="feedpub")
        self._forms = URLSafeTimedSerializer(key, salt="feedpub-form")

    def form_token(self) -> str:
        """A token for a form of ours: a post without one did not come from our page."""
        return self._forms.dumps("form")

    def check_form_token(self, token: str, *, max_age: int) -> bool:
        try:
            return self._forms.loads(token, max_age=max_age) == "form"
        except (BadSignature, SignatureExpired):
            return False

    def _address_tag(self, email: str) -> str:
        """A keyed digest of the address: binds the token to it without revealing it."""
        return hashlib.blake2b(email.lower().encode(), key=self._key[:64], digest_size=6).hexdigest()

    def make(self, purpose: str, subject: TokenSubject) -> str:
        return self._serializer.dumps(
            [purpose, subject.subscriber_id, subject.list, self._address_tag(subject.email)])

    def read(self, purpose: str, token: str, *, email_of, max_age: int | None = None) -> TokenSubject:
        """The subject of a valid TOKEN made for PURPOSE.

        EMAIL_OF(subscriber_id) gives the address the subscriber has now (or
        None): a token made for another address, or for a deleted subscriber,
        is refused.
        """
        try:
            (found, subscriber_id, list_name, tag), made_at = self._serializer.loads(
                token, max_age=max_age, return_timestamp=True)
        except SignatureExpired:
            raise BadToken("this link has expired") from None
        except (BadSignature, ValueError, TypeError):
            raise BadToken("this link is not valid") from None
        email = email_of(int(subscriber_id)) if found == purpose else None
        if email is None or self._address_tag(email) != tag:
            raise BadToken("this link is not valid")
        return TokenSubject(int(subscriber_id), email, str(list_name), made_at)
