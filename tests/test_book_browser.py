"""The built book in a real browser: every page of the quick-profile build opened in headless Chromium.

The book is served from its HTML folder on 127.0.0.1 and Debian's ``chromium`` is driven over the
Chrome DevTools Protocol (a websocket; ``websocket-client``), so no browser download and no driver
binary is needed. For every page we check what a reader would notice: images that do not load,
figures without a numbered caption, JavaScript errors, failed or external requests (the book must
read offline), internal links that lead nowhere, maths that MathJax did not render, table cells that
show NaN; and, on the scoreboard (issue 16), that every claim's row stays short at a 1280 px viewport
and that the landing page shows the scoreboard figure. Screenshots of the landing page, the claims
page and its scoreboard table are saved to ``test-output/`` (git-ignored; ``$TDA_TEST_OUTPUT`` to choose
another folder; CI keeps it as an artifact), and the run's summary names the folder.

``TDA_BOOK_HTML=<folder>`` checks a book already built there (its ``_build/html``) instead of executing
and building the quick book, e.g. after ``make book PROFILE=quick``: ``TDA_BOOK_HTML=_build/html``.

Skipped, with a message, only where no Chromium can be found (``.ci/run`` installs it with apt; or
point ``$CHROMIUM`` at a Chrome/Chromium binary).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tda import notebooks as nbrun
from tda.store import REPO_ROOT

from .conftest import ARTIFACTS

pytestmark = pytest.mark.slow

OUTPUT_DIR = Path(os.environ.get("TDA_TEST_OUTPUT", REPO_ROOT / "test-output"))
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--no-proxy-server", "--hide-scrollbars", "--mute-audio",
                  "--window-size=1280,900", "--remote-debugging-port=0"]
FIGURE_NUMBER = re.compile(r"^Fig\. \d+(\.\d+)*\s*$")
RESULTS_PAGE = "book/executed/claims.html"
LANDING_PAGE = "book/intro.html"
SCOREBOARD_ROWS = "table.tda-scoreboard tbody tr"  # tda.scoreboard.compact_html's rows
SCOREBOARD_FIGURE = "fig-scoreboard-landing"  # the figure's :name: in book/intro.md
MAX_ROW_HEIGHT = 200  # px at the 1280 px viewport: every verdict of the scoreboard fits on a screen or two
# "NaN", "nan" as a word, or pandas' "<NA>" (not "nano", "Nancy")
NAN_TEXT = r"(^|[^A-Za-z])(NaN|nan)([^A-Za-z]|$)|<NA>"


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class DevTools:
    """The smallest useful Chrome DevTools Protocol client: commands, and the events in between."""

    def __init__(self, ws_url: str, timeout: float = 60):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.timeout = timeout
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        self.ws.settimeout(self.timeout)
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, message in enumerate(self.events):
                if message["method"] == event:
                    return self.events.pop(i)
            self._receive(deadline - time.monotonic())
        raise TimeoutError(f"no {event} within {timeout} s")

    def drain(self, quiet: float = 0.5, limit: float = 10) -> None:
        """Read events until none arrives for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self._receive(quiet):
            pass

    def _receive(self, timeout: float) -> bool:
        import websocket

        self.ws.settimeout(max(timeout, 0.01))
        try:
            message = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return False
        if "method" in message:
            self.events.append(message)
        return True

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
                           timeout=30000)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


# Runs in the page once it has loaded: force lazy images to load, wait for MathJax, then report.
COLLECT = r"""
(async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await new Promise(r => setTimeout(r, 200));
  const inFigure = el => el.closest('figure, div.figure');
  return {
    url: location.href,
    title: document.title,
    images: imgs.map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth, height: i.naturalHeight})),
    figures: [...document.querySelectorAll('figure, div.figure')].map(f => ({
      id: f.id || '',
      images: [...f.querySelectorAll('img')].map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth,
        shownWidth: i.getBoundingClientRect().width})),
      number: (f.querySelector('.caption-number') || {}).textContent || '',
      caption: ((f.querySelector('figcaption, .caption') || {}).textContent || '').trim().slice(0, 80)})),
    outputImagesOutsideFigures: [...document.querySelectorAll('.cell_output img, .output img')]
      .filter(i => !inFigure(i)).map(i => i.src),
    links: [...document.querySelectorAll('a[href]')].map(a => ({href: a.href, raw: a.getAttribute('href'),
      headerlink: a.classList.contains('headerlink')})),
    math: document.querySelectorAll('.math').length,
    mathUnrendered: [...document.querySelectorAll('.math')].filter(m => !m.querySelector('mjx-container'))
      .map(m => m.textContent.slice(0, 60)),
    mathErrors: [...document.querySelectorAll('mjx-merror')].map(m => m.textContent.slice(0, 60)),
    mathJax: !!(window.MathJax && MathJax.version) ? MathJax.version : null,
    nanCells: [...document.querySelectorAll('td, th')].filter(c => /NAN_TEXT/.test(c.textContent)).map(c => {
      const head = [...((c.closest('table') || document).querySelectorAll('thead tr:last-child th'))][c.cellIndex];
      return (head ? head.textContent.trim() + ': ' : '') + c.textContent.trim().slice(0, 60); }),
    scoreboardRows: [...document.querySelectorAll('SCOREBOARD_ROWS')].map(r => ({
      claim: r.dataset.claim || '', height: r.getBoundingClientRect().height})),
  };
})()
""".replace("NAN_TEXT", NAN_TEXT).replace("SCOREBOARD_ROWS", SCOREBOARD_ROWS)


@pytest.fixture(scope="module")
def site(request):
    built = os.environ.get("TDA_BOOK_HTML")
    html = Path(built).resolve() if built else request.getfixturevalue("quick_book")["html"]
    if not (html / LANDING_PAGE).is_file():
        pytest.fail(f"TDA_BOOK_HTML={built}: no {LANDING_PAGE} there; point it at a built book's _build/html")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"html": html, "base": f"http://127.0.0.1:{server.server_address[1]}/"}
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("websocket", reason="websocket-client is needed to drive Chromium (pip install websocket-client)")
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium found (tried $CHROMIUM and " + ", ".join(CHROMIUM_NAMES) + "); install Debian's "
                    "chromium with `apt-get install chromium` (.ci/run does) to run the browser checks")
    profile = Path(tempfile.mkdtemp(prefix="tda-chromium-"))
    proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None:
                pytest.fail(f"{binary} exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{binary} did not open its DevTools port within 60 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        targets = json.loads(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        page = next(t for t in targets if t.get("type") == "page")
        cdp = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Network", "Log"):
            cdp.send(f"{domain}.enable")
        cdp.send("Network.setCacheDisabled", cacheDisabled=True)
        cdp.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        yield cdp
        cdp.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _is_redirect(path: Path) -> bool:
    return re.search(r'<meta[^>]+http-equiv="refresh"', path.read_text(errors="replace"), re.I) is not None


def _pages(html: Path) -> list[str]:
    """Every page of the site, except redirects (index.html; see the redirect test)."""
    skip = ("_static/", "_sources/", "_images/")
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if not p.relative_to(html).as_posix().startswith(skip) and not _is_redirect(p))


def _screenshot(cdp: DevTools, path: Path, full_page: bool) -> None:
    params = {"format": "png"}
    if full_page:
        size = cdp.send("Page.getLayoutMetrics")["cssContentSize"]
        params.update(captureBeyondViewport=True,
                      clip={"x": 0, "y": 0, "width": 1280, "height": min(size["height"], 6000), "scale": 1})
    path.write_bytes(base64.b64decode(cdp.send("Page.captureScreenshot", **params)["data"]))


def _screenshot_element(cdp: DevTools, selector: str, path: Path) -> bool:
    """A screenshot of the first element matching ``selector`` (False if the page has none)."""
    box = cdp.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null; "
                       "const r = e.getBoundingClientRect(); return {x: r.left + scrollX, y: r.top + scrollY, "
                       "width: r.width, height: r.height}; })()")
    if not box:
        return False
    data = cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip={**box, "scale": 1})
    path.write_bytes(base64.b64decode(data["data"]))
    return True


def _visit(cdp: DevTools, url: str) -> tuple[dict, list[dict]]:
    cdp.drain(0.2)
    cdp.events.clear()
    cdp.send("Page.navigate", url=url)
    cdp.wait_for("Page.loadEventFired", timeout=60)
    info = cdp.evaluate(COLLECT)
    cdp.drain(0.5)
    return info, list(cdp.events)


@pytest.fixture(scope="module")
def visits(site, browser, request):
    """Every page of the book, opened once: what the page reported and the browser's events."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    request.config.stash[ARTIFACTS] = OUTPUT_DIR  # tests/conftest.py names the folder in the run's summary
    out = {}
    for page in _pages(site["html"]):
        info, events = _visit(browser, site["base"] + page)
        out[page] = {"info": info, "events": events}
        if page == LANDING_PAGE:
            _screenshot(browser, OUTPUT_DIR / "landing.png", full_page=False)
        if page == RESULTS_PAGE:
            _screenshot(browser, OUTPUT_DIR / "claims.png", full_page=True)
            _screenshot_element(browser, SCOREBOARD_ROWS.split(" tbody")[0], OUTPUT_DIR / "scoreboard.png")
    return out


def _is_local(url: str, base: str) -> bool:
    return url.startswith(base)


def test_every_notebook_has_a_page(site):
    html = site["html"]
    missing = [name for name in nbrun.notebook_order() if not (html / "book" / "executed" / f"{name}.html").is_file()]
    assert not missing, f"executed notebooks without a page in the book (add them to _toc.yml): {missing}"


def test_landing_page_redirects_to_the_introduction(site, browser):
    browser.drain(0.2)
    browser.send("Page.navigate", url=site["base"] + "index.html")
    deadline = time.monotonic() + 30
    while not browser.evaluate("location.href").endswith(LANDING_PAGE):
        assert time.monotonic() < deadline, "index.html does not lead to " + LANDING_PAGE
        time.sleep(0.2)


def test_every_image_loads(visits):
    broken = [(page, img["src"]) for page, v in visits.items() for img in v["info"]["images"]
              if not (img["width"] > 0 and img["height"] > 0)]
    assert not broken, f"images that did not load (natural size 0): {broken}"
    assert any(img["src"].endswith(".png") for v in visits.values() for img in v["info"]["images"]), \
        "no figure image anywhere in the book"


def test_every_figure_is_numbered_captioned_and_referenced(visits, site):
    problems, figures = [], []
    for page, v in visits.items():
        for fig in v["info"]["figures"]:
            if not FIGURE_NUMBER.match(fig["number"]):
                problems.append(f"{page}: figure {fig['id'] or fig['caption']!r} has no 'Fig. N' number ({fig['number']!r})")
            if not fig["caption"]:
                problems.append(f"{page}: figure {fig['id']!r} has no caption")
            figures.append((page, fig["id"]))
        for src in v["info"]["outputImagesOutsideFigures"]:
            problems.append(f"{page}: a notebook output image outside a numbered figure ({src[:60]}); glue it and "
                            "show it with {glue:figure} and a :name:")
    referenced = {urlsplit(link["href"])._replace(query="").geturl().removeprefix(site["base"])
                  for v in visits.values() for link in v["info"]["links"] if not link["headerlink"]}
    for page, fid in figures:
        if fid and f"{page}#{fid}" not in referenced:
            problems.append(f"{page}: figure #{fid} is never referenced from the text (use {{numref}}`{fid}`)")
    assert figures, "the book has no figures"
    assert not problems, "\n".join(problems)


def test_no_console_errors_or_exceptions(visits):
    errors = []
    for page, v in visits.items():
        for e in v["events"]:
            p = e["params"]
            if e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                errors.append(f"{page}: console.{p['type']}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                                       for a in p["args"]))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                errors.append(f"{page}: uncaught {d.get('exception', {}).get('description', d.get('text'))}")
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(f"{page}: {p['entry']['text']} {p['entry'].get('url', '')}")
    assert not errors, "\n".join(errors)


def test_no_failed_requests_and_nothing_fetched_from_the_network(visits, site):
    failed, external = [], []
    for page, v in visits.items():
        urls = {}
        for e in v["events"]:
            p = e["params"]
            if e["method"] == "Network.requestWillBeSent":
                urls[p["requestId"]] = p["request"]["url"]
                url = p["request"]["url"]
                if url.startswith(("http:", "https:", "ws:", "wss:")) and not _is_local(url, site["base"]):
                    external.append(f"{page}: {url}")
            elif e["method"] == "Network.responseReceived" and p["response"]["status"] >= 400:
                failed.append(f"{page}: {p['response']['status']} {p['response']['url']}")
            elif e["method"] == "Network.loadingFailed":
                failed.append(f"{page}: {p.get('errorText')} {urls.get(p['requestId'], p['requestId'])}")
    assert not failed, "failed requests:\n" + "\n".join(failed)
    assert not external, "the book must read offline, but pages fetched:\n" + "\n".join(external)


def test_every_internal_link_resolves(visits, site):
    html, base = site["html"], site["base"]
    ids_cache: dict[Path, set[str]] = {}

    def ids(path: Path) -> set[str]:
        if path not in ids_cache:
            ids_cache[path] = set(re.findall(r'\b(?:id|name)="([^"]+)"', path.read_text(errors="replace")))
        return ids_cache[path]

    broken = []
    checked = 0
    for page, v in visits.items():
        for link in v["info"]["links"]:
            url = link["href"]
            if not _is_local(url, base):
                continue
            parts = urlsplit(url)
            rel = unquote(parts.path).lstrip("/")
            target = html / rel
            if rel == "" or rel.endswith("/"):
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{page}: {link['raw']} -> no file {target.relative_to(html)}")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in ids(target):
                broken.append(f"{page}: {link['raw']} -> no #{parts.fragment} in {target.relative_to(html)}")
    assert checked > 50, f"only {checked} internal links found; is the navigation there?"
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_maths_renders_offline(visits):
    background = visits["book/background.html"]["info"]
    assert background["mathJax"], "MathJax did not load on the background chapter"
    assert background["math"] > 10, "the background chapter should show its equations"
    problems = []
    for page, v in visits.items():
        info = v["info"]
        if info["mathUnrendered"]:
            problems.append(f"{page}: maths left as TeX: {info['mathUnrendered'][:3]}")
        if info["mathErrors"]:
            problems.append(f"{page}: TeX errors: {info['mathErrors'][:3]}")
    assert not problems, "\n".join(problems)


def test_screenshots_are_saved(visits):
    for name in ("landing.png", "claims.png", "scoreboard.png"):
        path = OUTPUT_DIR / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert path.stat().st_size > 10_000, f"{path} looks empty"


# ---- issue 16: the book as a reader meets it ----------------------------------------------------------------
def test_scoreboard_rows_are_short_at_1280_px(visits):
    """Every claim's row of the scoreboard is at most 200 px tall, so the verdicts fit on a screen or two."""
    rows = visits[RESULTS_PAGE]["info"]["scoreboardRows"]
    assert len(rows) >= 9, f"the scoreboard shows {len(rows)} rows ({SCOREBOARD_ROWS}); expected one per claim"
    tall = [f"{r['claim']}: {r['height']:.0f} px" for r in rows if r["height"] > MAX_ROW_HEIGHT]
    assert not tall, f"scoreboard rows taller than {MAX_ROW_HEIGHT} px at 1280 px: {tall}"


def test_no_table_cell_shows_nan(visits):
    shown = [f"{page}: {len(v['info']['nanCells'])} cells, e.g. {v['info']['nanCells'][:3]}"
             for page, v in visits.items() if v["info"]["nanCells"]]
    assert not shown, "table cells that show NaN (label, drop or split the missing values):\n" + "\n".join(shown)


def test_landing_page_shows_the_scoreboard_figure(visits):
    figures = {f["id"]: f for f in visits[LANDING_PAGE]["info"]["figures"]}
    assert SCOREBOARD_FIGURE in figures, f"{LANDING_PAGE} has no figure #{SCOREBOARD_FIGURE}: {list(figures)}"
    images = figures[SCOREBOARD_FIGURE]["images"]
    assert images and all(i["width"] > 0 for i in images), f"the scoreboard figure's image did not load: {images}"
    assert images[0]["shownWidth"] >= 500, f"the scoreboard figure is shown {images[0]['shownWidth']:.0f} px wide"
