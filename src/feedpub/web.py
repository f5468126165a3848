"""The web app: the published site, subscribing with double opt-in, one-click unsubscribe, health."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, urlsplit

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .config import Site
from .feeds import FEED_FILES, MEDIA_TYPES
from .notices import list_titles as titles_of_lists
from .notices import lists_text as quoted_lists
from .pages import render_page
from .schedule import Schedule
from .store import Store
from .subscribers import Subscribers, normalize_address
from .templating import words
from .tokens import BadToken, Signer, secret_key

log = logging.getLogger("feedpub")
CONFIRM_MAX_AGE = 7 * 24 * 3600
FORM_MAX_AGE = 6 * 3600
_FEED_TYPES = {name: MEDIA_TYPES[kind] for kind, name in FEED_FILES.items()}


class SiteFiles(StaticFiles):
    """The output folder, with ETag, Last-Modified and 304 from Starlette, and the feeds' own types."""

    def file_response(self, full_path, stat_result, scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = _FEED_TYPES.get(os.path.basename(full_path))
        if media_type and "content-type" in response.headers:
            response.headers["content-type"] = f"{media_type}; charset=utf-8"
        return response


class RateLimit:
    """At most LIMIT events per key in a sliding window of SECONDS, in memory."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - self.seconds:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            if len(self._events) > 100_000:  # forget idle keys rather than grow without end
                for idle in [k for k, v in self._events.items() if not v]:
                    del self._events[idle]
            return True


def create_app(site: Site, schedule: Schedule, store: Store, *, service=None,
               environ: Mapping[str, str] = os.environ) -> Starlette:
    signer = Signer(secret_key(site, environ))
    book = Subscribers(store)
    vocabulary = words(site.templates_dir, site.language)
    list_titles = titles_of_lists(schedule)
    per_address, per_client = RateLimit(3, 3600), RateLimit(20, 600)

    def page(template: str, status_code: int = 200, **context) -> HTMLResponse:
        context.setdefault("url", site.url())
        context.setdefault("feeds", [])
        return HTMLResponse(render_page(site, template, **context), status_code=status_code)

    def notice(heading: str, message: str, status_code: int = 200, *, button: str = "",
               action: str = "") -> HTMLResponse:
        return page("notice.html.j2", status_code, heading=heading, message=message, button=button,
                    action=action)

    def same_site(request: Request) -> bool:
        """A browser says where a form was posted from; it must be this site."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            return True  # no claim either way: the form token decides
        host = urlsplit(origin).netloc
        return host in {request.headers.get("host"), urlsplit(site.base_url).netloc}

    def lists_text(names: list[str]) -> str:
        return quoted_lists(site, list_titles, names)

    def subscribe_form(error: str = "", status_code: int = 200, **values) -> HTMLResponse:
        return page("subscribe.html.j2", status_code, action=site.url("subscribe"), error=error,
                    form_token=signer.form_token(), lists=list(list_titles.items()),
                    email=values.get("email", ""), name=values.get("name", ""),
                    chosen=values.get("chosen", list(list_titles)[:1]))

    async def form_fields(request: Request) -> dict[str, list[str]]:
        body = await request.body()
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    async def subscribe(request: Request) -> Response:
        if request.method == "GET":
            return subscribe_form()
        fields = await form_fields(request)
        address = (fields.get("email") or [""])[0]
        name = (fields.get("name") or [""])[0]
        chosen = [n for n in fields.get("lists", []) if n in list_titles]
        if not same_site(request) or not signer.check_form_token((fields.get("form_token") or [""])[0],
                                                                max_age=FORM_MAX_AGE):
            return subscribe_form(vocabulary["form_expired"], 403, email=address, name=name, chosen=chosen)
        if not chosen:
            return subscribe_form(vocabulary["choose_list"], 400, email=address, name=name)
        try:
            email = normalize_address(address)
        except ValueError:
            return subscribe_form(vocabulary["bad_address"], 400, email=address, name=name, chosen=chosen)
        client = request.client.host if request.client else "unknown"
        if not per_client.allow(client) or not per_address.allow(email):
            return notice(vocabulary["subscribe_title"], vocabulary["too_many"], 429)
        # The request and its confirmation mail are one transaction; the sender mails it.
        book.request(email, name=name, lists=chosen, source="web", now=datetime.now(timezone.utc))
        if service is not None:
            service.send_soon()
        # The same answer whatever is known of the address: this page reveals no one.
        return notice(vocabulary["subscribe_title"], vocabulary["check_inbox"])

    def email_of(subscriber_id: int) -> str | None:
        subscriber = book.by_id(subscriber_id)
        return subscriber.email if subscriber else None

    async def confirm(request: Request) -> Response:
        try:
            claim = signer.read("confirm", request.query_params.get("token", ""), email_of=email_of,
                                max_age=CONFIRM_MAX_AGE)
        except BadToken:
            return notice(vocabulary["confirmed_title"], vocabulary["invalid_link"], 400)
        chosen = [n for n in claim.list.split(",") if n]
        subscriber = book.by_id(claim.subscriber_id)
        if subscriber.status == "bounced":
            return notice(vocabulary["confirmed_title"], vocabulary["invalid_link"], 400)
        now = datetime.now(timezone.utc)
        if subscriber.status != "active":  # pending, or coming back after unsubscribing
            book.set_status(subscriber.id, "active", now)
        book.upsert(subscriber.email, lists=chosen, source="web", now=now)
        log.info("confirm: subscriber %d confirmed %s", subscriber.id, ",".join(chosen))
        return notice(vocabulary["confirmed_title"], vocabulary["confirmed"].format(lists=lists_text(chosen)))

    async def unsubscribe(request: Request) -> Response:
        token = request.query_params.get("token", "")
        if not token:
            return notice(vocabulary["unsubscribe_title"], vocabulary["unsubscribe_help"])
        try:
            claim = signer.read("unsubscribe", token, email_of=email_of)
        except BadToken:
            return notice(vocabulary["unsubscribe_title"], vocabulary["invalid_link"], 400)
        what = lists_text([claim.list])
        if request.method == "GET":  # link scanners follow GETs: only a button here
            return notice(vocabulary["unsubscribe_title"],
                          vocabulary["unsubscribe_question"].format(list=what, email=claim.email),
                          button=vocabulary["unsubscribe_button"],
                          action=site.url(f"unsubscribe?token={quote(token)}"))
        # RFC 8058 one-click: the signed token is the whole authority, no cookie, no form token.
        book.unsubscribe(claim.subscriber_id, claim.list, datetime.now(timezone.utc))
        log.info("unsubscribe: subscriber %d left %s", claim.subscriber_id, claim.list)
        return notice(vocabulary["unsubscribe_title"],
                      vocabulary["unsubscribed"].format(list=what, email=claim.email))

    async def healthz(request: Request) -> JSONResponse:
        report: dict = {"scheduler": "off (web only)" if service is None else
                        ("running" if service.running else "stopped")}
        try:
            with store.engine.connect() as db:
                db.execute(text("SELECT 1"))
            report["database"] = "ok"
        except Exception as exc:  # any failure of the database is what this endpoint reports
            report["database"] = f"error: {type(exc).__name__}"
        if service is not None:
            report["jobs"] = {job: when.isoformat() for job, when in service.next_runs().items()}
        healthy = report["database"] == "ok" and (service is None or service.running)
        return JSONResponse(report, status_code=200 if healthy else 503)

    site.output_dir.mkdir(parents=True, exist_ok=True)
    routes = [
        Route("/healthz", healthz),
        Route("/subscribe", subscribe, methods=["GET", "POST"]),
        Route("/confirm", confirm),
        Route("/unsubscribe", unsubscribe, methods=["GET", "POST"]),
        Mount("/", SiteFiles(directory=site.output_dir, html=True)),
    ]
    return Starlette(routes=routes, middleware=[Middleware(GZipMiddleware, minimum_size=1000)])
