"""The web app: the published site, subscribing with double opt-in, one-click unsubscribe, health."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import PurePosixPath
from urllib.parse import parse_qs, quote, urlsplit

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
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
from .ratelimit import RateLimit
from .templating import words
from .tokens import BadToken, Signer, TokenSubject, secret_key
from .webguard import BodyTooLarge, Guard, client_address, refusal

log = logging.getLogger("feedpub")
CONFIRM_MAX_AGE = 7 * 24 * 3600
FORM_MAX_AGE = 6 * 3600
SUBSCRIBE_ANSWER_SECONDS = 0.1  # no sign-up is answered sooner: its timing tells nothing of the address
_FEED_TYPES = {name: MEDIA_TYPES[kind] for kind, name in FEED_FILES.items()}


class SiteFiles(StaticFiles):
    """The output folder, with ETag, Last-Modified and 304 from Starlette, and the feeds' own types.

    Nothing whose name starts with a dot is served: the build's temporary
    files, a writer's .drafts or .git, whatever an editor leaves behind.
    """

    async def get_response(self, path: str, scope) -> Response:
        if any(part.startswith(".") for part in PurePosixPath(path).parts):
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)

    def file_response(self, full_path, stat_result, scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = _FEED_TYPES.get(os.path.basename(full_path))
        if media_type and "content-type" in response.headers:
            response.headers["content-type"] = f"{media_type}; charset=utf-8"
        return response


class _TooManyFields(Exception):
    pass


def create_app(site: Site, schedule: Schedule, store: Store, *, service=None,
               environ: Mapping[str, str] = os.environ) -> Guard:
    """The site's ASGI app, inside the Guard that limits requests and adds the security headers."""
    settings = site.web
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
               action: str = "", one_click: bool = False) -> HTMLResponse:
        return page("notice.html.j2", status_code, heading=heading, message=message, button=button,
                    action=action, one_click=one_click)

    def same_site(request: Request) -> bool:
        """A browser says where a form was posted from; it must be this site."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin:
            return True  # no claim either way: the form token decides
        if origin == "null":  # a sandboxed frame, a data: or file: page: never a page of ours
            return False
        host = urlsplit(origin).netloc
        return host in {request.headers.get("host"), urlsplit(site.base_url).netloc}

    def client_of(request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies)

    def lists_text(names: list[str]) -> str:
        return quoted_lists(site, list_titles, names)

    def subscribe_form(error: str = "", status_code: int = 200, **values) -> HTMLResponse:
        return page("subscribe.html.j2", status_code, action=site.url("subscribe"), error=error,
                    form_token=signer.form_token(), lists=list(list_titles.items()),
                    email=values.get("email", ""), name=values.get("name", ""),
                    chosen=values.get("chosen", list(list_titles)[:1]))

    async def form_fields(request: Request) -> dict[str, list[str]]:
        body = await request.body()  # at most web.max_body: the Guard refuses more before it is read
        if body.count(b"&") >= settings.max_fields:
            raise _TooManyFields
        try:
            return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True,
                            max_num_fields=settings.max_fields)
        except ValueError:
            raise _TooManyFields from None

    async def subscribe(request: Request) -> Response:
        if request.method != "POST":
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
        if not per_client.allow(client_of(request)) or not per_address.allow(email):
            return notice(vocabulary["subscribe_title"], vocabulary["too_many"], 429)
        # The request and its confirmation mail are one transaction; the sender mails it.
        started = time.monotonic()
        await run_in_threadpool(book.request, email, name=name, lists=chosen, source="web",
                                now=datetime.now(timezone.utc))
        if service is not None:
            service.send_soon()
        # The same answer whatever is known of the address, and at the same time: an
        # address already on every list asked for costs no write, and would answer sooner.
        await asyncio.sleep(max(0.0, SUBSCRIBE_ANSWER_SECONDS - (time.monotonic() - started)))
        return notice(vocabulary["subscribe_title"], vocabulary["check_inbox"])

    def email_of(subscriber_id: int) -> str | None:
        subscriber = book.by_id(subscriber_id)
        return subscriber.email if subscriber else None

    def claim_of(purpose: str, token: str, max_age: int | None = None) -> TokenSubject | None:
        try:
            return signer.read(purpose, token, email_of=email_of, max_age=max_age)
        except BadToken:
            return None

    async def confirm(request: Request) -> Response:
        token = request.query_params.get("token", "")
        claim = await run_in_threadpool(claim_of, "confirm", token, CONFIRM_MAX_AGE)
        if claim is None or (request.method == "POST" and not same_site(request)):
            return notice(vocabulary["confirmed_title"], vocabulary["invalid_link"], 400)
        chosen = [n for n in claim.list.split(",") if n]
        # A GET (a reader's click, or a mail scanner's) may confirm a pending address
        # only; bringing back one who left, or adding lists, takes a POST. HEAD changes nothing.
        outcome = await run_in_threadpool(book.confirm, claim.subscriber_id, chosen, made_at=claim.made_at,
                                          now=datetime.now(timezone.utc), pending_only=request.method != "POST",
                                          change=request.method != "HEAD")
        if outcome == "confirmed":
            log.info("confirm: subscriber %d confirmed %s", claim.subscriber_id, ",".join(chosen))
            return notice(vocabulary["confirmed_title"], vocabulary["confirmed"].format(lists=lists_text(chosen)))
        if outcome == "used":
            return notice(vocabulary["confirmed_title"], vocabulary["already_confirmed"])
        if outcome == "ask":
            return notice(vocabulary["confirmed_title"],
                          vocabulary["confirm_question"].format(lists=lists_text(chosen), email=claim.email),
                          button=vocabulary["confirm_button"], action=site.url(f"confirm?token={quote(token)}"))
        return notice(vocabulary["confirmed_title"], vocabulary["invalid_link"], 400)  # stale or refused

    async def unsubscribe(request: Request) -> Response:
        token = request.query_params.get("token", "")
        if not token:
            return notice(vocabulary["unsubscribe_title"], vocabulary["unsubscribe_help"])
        claim = await run_in_threadpool(claim_of, "unsubscribe", token)
        if claim is None:
            return notice(vocabulary["unsubscribe_title"], vocabulary["invalid_link"], 400)
        what = lists_text([claim.list])
        if request.method != "POST":  # GET and HEAD: link scanners follow them; only a button here
            return notice(vocabulary["unsubscribe_title"],
                          vocabulary["unsubscribe_question"].format(list=what, email=claim.email),
                          button=vocabulary["unsubscribe_button"],
                          action=site.url(f"unsubscribe?token={quote(token)}"), one_click=True)
        # RFC 8058 one-click: the signed token is the whole authority, no cookie, no form
        # token, and no Origin check either: a webmail may post it from its own pages.
        await run_in_threadpool(book.unsubscribe, claim.subscriber_id, claim.list, datetime.now(timezone.utc))
        log.info("unsubscribe: subscriber %d left %s", claim.subscriber_id, claim.list)
        return notice(vocabulary["unsubscribe_title"],
                      vocabulary["unsubscribed"].format(list=what, email=claim.email))

    def database_health() -> str:
        try:
            with store.engine.connect() as db:
                db.execute(text("SELECT 1"))
            return "ok"
        except Exception as exc:  # any failure of the database is what this endpoint reports
            return f"error: {type(exc).__name__}"

    async def healthz(request: Request) -> JSONResponse:
        report: dict = {"scheduler": "off (web only)" if service is None else
                        ("running" if service.running else "stopped")}
        report["database"] = await run_in_threadpool(database_health)
        if service is not None:
            report["jobs"] = {job: when.isoformat() for job, when in service.next_runs().items()}
        healthy = report["database"] == "ok" and (service is None or service.running)
        return JSONResponse(report, status_code=200 if healthy else 503)

    async def too_many_fields(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(vocabulary["too_many_fields"] + "\n", status_code=400)

    async def database_busy(request: Request, exc: Exception) -> Response:
        """A write lock held past the busy timeout (a long import, say): come back later, not a 500."""
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise exc
        log.warning("web: database busy, answered 503: %s %s", request.method, request.url.path)
        return PlainTextResponse(vocabulary["busy"] + "\n", status_code=503, headers={"Retry-After": "10"})

    site.output_dir.mkdir(parents=True, exist_ok=True)
    routes = [
        Route("/healthz", healthz),
        Route("/subscribe", subscribe, methods=["GET", "POST"]),
        Route("/confirm", confirm, methods=["GET", "POST"]),
        Route("/unsubscribe", unsubscribe, methods=["GET", "POST"]),
        Mount("/", SiteFiles(directory=site.output_dir, html=True)),
    ]
    handlers = {_TooManyFields: too_many_fields, OperationalError: database_busy,
                BodyTooLarge: lambda request, exc: refusal(413),
                ClientDisconnect: lambda request, exc: Response(status_code=400)}  # no one is there to read it
    app = Starlette(routes=routes, middleware=[Middleware(GZipMiddleware, minimum_size=1000)],
                    exception_handlers=handlers)
    # Outside Starlette's own error handling, so that its 500 pages get the headers too.
    return Guard(app, settings)
