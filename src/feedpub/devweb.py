"""The preview's web app: the dev build's files with a reload script, the events it listens to, digest previews.

Every HTML page it serves gets the errors of the latest build as a banner and
a small script that reloads the page when the server says a rebuild is done.
The subscription routes answer without subscribing anyone or sending mail.
"""

from __future__ import annotations

import asyncio
import html
import re
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from .errors import ConfigError
from .notices import list_titles
from .pages import render_page
from .web import SiteFiles
from .webguard import CONTENT_SECURITY_POLICY, Guard

if TYPE_CHECKING:
    from .devserver import Preview

EVENTS = "_dev/events"
SCRIPT = "_dev/reload.js"
PREVIEWS = "_preview/"
HEARTBEAT_SECONDS = 15  # a comment line now and then: a closed tab is noticed, and proxies keep the stream
# The site's policy, with the one script of ours and the stream it reads.
DEV_POLICY = CONTENT_SECURITY_POLICY + "; script-src 'self'; connect-src 'self'"
DEV_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": DEV_POLICY}
_BODY_END = re.compile(rb"</body\s*>(?![\s\S]*</body)", re.IGNORECASE)

# Reload when a rebuild is announced, or when the page was served before the latest build.
RELOAD_JS = """(function () {
  var me = document.currentScript, served = me.getAttribute("data-version");
  var events = new EventSource(me.getAttribute("data-events"));
  events.addEventListener("hello", function (e) { if (e.data !== served) location.reload(); });
  events.addEventListener("rebuild", function () { location.reload(); });
})();
"""


def _banner(preview: Preview) -> bytes:
    if not preview.errors:
        return b""
    lines = "".join(f"<li><code>{html.escape(line)}</code></li>" for line in preview.errors)
    return (f'<div id="feedpub-dev-errors" role="alert" style="position: sticky; bottom: 0; margin: 0; '
            f'padding: .75rem 1.25rem; background: #b3261e; color: #fff; font: 14px/1.4 system-ui, sans-serif">'
            f"<strong>The preview could not build everything:</strong><ul>{lines}</ul></div>").encode()


def inject(preview: Preview, page: bytes) -> bytes:
    """PAGE with the build's errors and the reload script before its </body>."""
    script = (f'<script src="{html.escape(preview.base_url + SCRIPT)}" data-version="{preview.version}" '
              f'data-events="{html.escape(preview.base_url + EVENTS)}"></script>').encode()
    extra = _banner(preview) + script
    match = _BODY_END.search(page)
    return page[: match.start()] + extra + page[match.start():] if match else page + extra


def _plain_page(title: str, body: str) -> bytes:
    """A bare page of the preview's own (its indexes and errors), outside the site's templates."""
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
            f'<body style="font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto">'
            f"<h1>{html.escape(title)}</h1>{body}</body></html>").encode()


class DevFiles(SiteFiles):
    """The dev build's output folder; pages get the banner and the script, nothing is cached."""

    def __init__(self, preview: Preview, **kwargs) -> None:
        super().__init__(**kwargs)
        self.preview = preview

    def file_response(self, full_path, stat_result, scope, status_code: int = 200) -> Response:
        if str(full_path).endswith(".html"):
            with open(full_path, "rb") as page:
                return HTMLResponse(inject(self.preview, page.read()), status_code, headers=DEV_HEADERS)
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = "no-store"
        return response


def create_dev_app(preview: Preview) -> Guard:
    def page(body: bytes, status_code: int = 200) -> HTMLResponse:
        return HTMLResponse(inject(preview, body), status_code, headers=DEV_HEADERS)

    def site_page(template: str, **context) -> HTMLResponse:
        site = preview.site
        context = {"url": site.url(), "feeds": [], **context}
        return page(render_page(site, template, **context))

    async def events(request: Request) -> StreamingResponse:
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def listener(version: int | None) -> None:  # called from the builder's thread
            loop.call_soon_threadsafe(queue.put_nowait, version)

        preview.listeners.add(listener)

        async def stream():
            try:
                yield f"retry: 1000\nevent: hello\ndata: {preview.version}\n\n"
                while True:
                    try:
                        version = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                    except TimeoutError:
                        yield ": waiting for a change\n\n"
                        continue
                    if version is None:  # the server is stopping
                        return
                    yield f"event: rebuild\ndata: {version}\n\n"
            finally:
                preview.listeners.discard(listener)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def script(request: Request) -> Response:
        return Response(RELOAD_JS, media_type="text/javascript", headers={"Cache-Control": "no-store"})

    async def previews(request: Request) -> HTMLResponse:
        digests = preview.schedule.digests if preview.schedule else {}
        items = "".join(f'<li><a href="{html.escape(preview.site.url(PREVIEWS + name + "/"))}">'
                        f"{html.escape(digest.title)}</a> ({html.escape(name)})</li>"
                        for name, digest in digests.items())
        note = ("<p>Each digest of schedule.yaml as it would be composed now, from the newest articles "
                "(drafts and scheduled ones included). Nothing is stored or sent.</p>")
        return page(_plain_page("Digest previews", note + (f"<ul>{items}</ul>" if items else
                                                           "<p>schedule.yaml has no digest.</p>")))

    async def digest_preview(request: Request) -> HTMLResponse:
        name = request.path_params["name"]
        try:
            composed = await run_in_threadpool(preview.digest_html, name)
        except ConfigError as exc:  # no such digest
            return page(_plain_page("No such digest", f"<p>{html.escape(str(exc))}</p>"), 404)
        except Exception as exc:  # a template error, say: shown, and the next edit may fix it
            from .devserver import problem_line

            return page(_plain_page("The digest could not be composed",
                                    f"<p><code>{html.escape(problem_line(exc, preview.root))}</code></p>"), 500)
        if composed is None:
            return page(_plain_page("No article yet", "<p>This digest has no article to show.</p>"))
        return page(composed.encode())

    async def not_sent(request: Request) -> HTMLResponse:
        """The forms may be tried; nothing is recorded and no mail goes out."""
        if request.url.path == "/subscribe" and request.method == "GET":
            titles = list_titles(preview.schedule)
            return site_page("subscribe.html.j2", action=preview.site.url("subscribe"), error="",
                             form_token="preview", lists=list(titles.items()), email="", name="",
                             chosen=list(titles)[:1])
        return site_page("notice.html.j2", heading="Preview: not sent",
                         message="The preview server subscribes no one and sends no mail; "
                                 "`feedpub serve` does.", button="", action="", one_click=False)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"dev": True, "version": preview.version, "errors": preview.errors,
                             "build_seconds": round(preview.seconds, 4)})

    async def missing(request: Request, exc: HTTPException) -> Response:
        if exc.status_code != 404:
            return Response(status_code=exc.status_code)
        return page(_plain_page("Not found", "<p>Nothing here in the preview build.</p>"), 404)

    site = preview.site
    site.output_dir.mkdir(parents=True, exist_ok=True)
    routes = [
        Route("/healthz", healthz),
        Route("/" + EVENTS, events),
        Route("/" + SCRIPT, script),
        Route("/" + PREVIEWS, previews),
        Route("/" + PREVIEWS + "{name}/", digest_preview),
        *(Route(f"/{path}", not_sent, methods=["GET", "POST"]) for path in ("subscribe", "confirm", "unsubscribe")),
        Mount("/", DevFiles(preview, directory=site.output_dir, html=True)),
    ]
    return Guard(Starlette(routes=routes, exception_handlers={HTTPException: missing}), site.web)
