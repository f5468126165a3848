"""Signed tokens for subscribers' personal links: unsubscribe, confirm.

A token names one subscriber (by id and address) and one list, and is signed
with the site's secret key: a token made for one address does not work for
another, and a changed token is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .config import Site
from .errors import FeedpubError

SECRET_ENV = "FEEDPUB_SECRET_KEY"
# Hosts that can only be an example or a machine of one's own: there a fixed
# development key is acceptable, so the bundled example works out of the box.
_EXAMPLE_HOSTS = ("localhost", "127.0.0.1", "example.org", "example.com", "example.net")


class BadToken(FeedpubError):
    """A link's token is forged, altered, for another purpose, or expired."""


@dataclass(frozen=True)
class TokenSubject:
    """Who and what a token is for. The address itself never appears in the token."""

    subscriber_id: int
    email: str
    list: str


def secret_key(site: Site, environ: Mapping[str, str]) -> str:
    """The key that signs personal links; refuses to run a real site without one."""
    key = environ.get(SECRET_ENV, "")
    if key:
        return key
    host = urlsplit(site.base_url).hostname or ""
    if host in _EXAMPLE_HOSTS or host.endswith(tuple("." + h for h in _EXAMPLE_HOSTS)):
        return "feedpub-example-key:" + hashlib.sha256(site.base_url.encode()).hexdigest()
    raise FeedpubError(
        f"{SECRET_ENV} is not set: personal links (unsubscribe, confirm) must be signed with a "
        f"secret key of your own; set it in the service's environment, e.g. "
        f"{SECRET_ENV}=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )


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
            found, subscriber_id, list_name, tag = self._serializer.loads(token, max_age=max_age)
        except SignatureExpired:
            raise BadToken("this link has expired") from None
        except (BadSignature, ValueError, TypeError):
            raise BadToken("this link is not valid") from None
        email = email_of(int(subscriber_id)) if found == purpose else None
        if email is None or self._address_tag(email) != tag:
            raise BadToken("this link is not valid")
        return TokenSubject(int(subscriber_id), email, str(list_name))
