"""The report in a real headless browser (Debian's Chromium through Playwright): every page loads, every image
decodes, every local link resolves, and nothing is wider than the window, on a laptop and on a phone.

Skipped when Chromium or Playwright is missing, except under CI (CI set), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from test_report import fake_record

from seminal.core import paths
from seminal.core.report import build_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

CHECK = """() => {
  const vw = document.documentElement.clientWidth;
  const clipped = el => { for (let p = el.parentElement; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return true; }
    return false; };
  return {
    ready: document.readyState,
    title: document.title,
    scroll: document.documentElement.scrollWidth, width: vw,
    wide: [...document.body.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > vw + 1 && !clipped(e))
          .map(e => e.tagName + ': ' + e.textContent.slice(0, 60)),
    images: [...document.images].map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  };
}"""


@pytest.fixture(scope="module")
def browser():
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and CHROMIUM is None:
        reason = "no Chromium on PATH (apt-get install chromium)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _check_site(browser, site: Path, screenshots: dict[str, str] | None = None) -> int:
    pages = sorted(site.glob("*.html"))
    assert (site / "index.html") in pages
    for width in (1280, 390):
        page = browser.new_page(viewport={"width": width, "height": 900})
        errors: list = []
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        for html in pages:
            response = page.goto(html.as_uri(), wait_until="load")
            assert response is None or response.ok, html
            got = page.evaluate(CHECK)
            where = f"{html.name} at {width}px"
            assert got["ready"] == "complete" and got["title"], where
            assert got["scroll"] <= got["width"], f"{where}: page scrolls sideways ({got['scroll']} > {got['width']})"
            assert not got["wide"], f"{where}: wider than the window: {got['wide'][:3]}"
            assert all(i["ok"] for i in got["images"]), f"{where}: broken images {got['images']}"
            for link in got["links"]:
                url = urlparse(link)
                if url.scheme == "file":
                    assert Path(unquote(url.path)).is_file(), f"{where}: broken link {link}"
            if screenshots and width == 1280 and html.name in screenshots:
                page.screenshot(path=screenshots[html.name], full_page=True)
        assert not errors, errors
        page.close()
    return len(pages)


def test_report_in_a_browser(browser, tmp_path):
    fake_record(tmp_path / "results")
    build_report(tmp_path / "results", tmp_path / "site")
    page = browser.new_page()
    page.goto((tmp_path / "site" / "backprop.html").as_uri())
    assert page.evaluate("[...document.images].filter(i => i.naturalWidth > 0).length") == 1  # the plot shows
    page.close()
    assert _check_site(browser, tmp_path / "site", {"backprop.html": "/tmp/report_paper.png"}) == 3


def test_committed_record_in_a_browser(browser, tmp_path):
    build_report(paths.PROJECT_ROOT / "results", tmp_path / "site")
    assert _check_site(browser, tmp_path / "site", {"index.html": "/tmp/report_index.png"}) > 1
