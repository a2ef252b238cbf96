"""Open every page of the built site in a real headless browser and fail on what a reader would see.

    python docs/_tools/check_site.py [--site docs/_build/html] [--screenshots DIR] [--width 1280]

For each HTML page of the built site (``sphinx-build -b html docs docs/_build/html``) it loads
the page from disk in headless Chromium (Debian's ``chromium`` and ``chromium-driver``;
``pip install selenium``), with the network switched off, waits for MathJax to typeset, and
records: console errors (a script that failed, a resource that did not load), images that did
not load (``naturalWidth == 0``), math MathJax could not render, Markdown left as text (a table
or a code fence a cell's output printed but nothing rendered), and any request that tried to
leave the machine. It saves a full-page screenshot of each page into ``--screenshots`` and exits
1 if any page had a problem, listing them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !window.MathJax.startup) { done("no-mathjax"); return; }
window.MathJax.startup.promise.then(() => done("ok")).catch(e => done("error: " + e));
"""

_BROKEN_IMAGES = """
return Array.from(document.images)
  .filter(img => !(img.complete && img.naturalWidth > 0))
  .map(img => img.getAttribute("src"));
"""

_MATH_ERRORS = """
return Array.from(document.querySelectorAll("mjx-merror, .MathJax_Error"))
  .map(e => e.textContent.slice(0, 80));
"""

# A paragraph that is a Markdown table or code fence as text: an output rendered as plain text.
_RAW_MARKDOWN = """
return Array.from(document.querySelectorAll("article p, article li"))
  .map(e => e.textContent)
  .filter(t => /^\\s*\\|.*\\|\\s*[|][-\u2014\u2013:]+[|]/s.test(t) || /^\\s*```/.test(t))
  .map(t => t.trim().slice(0, 80));
"""

_PAGE_HEIGHT = "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);"


def browser(width: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},900", "--allow-file-access-from-files",
                 # no network: any request for a remote host fails and is reported
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def check_page(driver, page: Path, site: Path, screenshots: Path | None, width: int) -> list[str]:
    driver.get(page.resolve().as_uri())
    driver.set_script_timeout(30)
    math = driver.execute_async_script(_WAIT_FOR_MATH)
    time.sleep(0.2)
    problems = []
    if math.startswith("error"):
        problems.append(f"MathJax: {math}")
    problems += [f"math not rendered: {text}" for text in driver.execute_script(_MATH_ERRORS)]
    problems += [f"image did not load: {src}" for src in driver.execute_script(_BROKEN_IMAGES)]
    problems += [f"Markdown shown as text: {text}" for text in driver.execute_script(_RAW_MARKDOWN)]
    for entry in driver.get_log("browser"):
        if entry["level"] in ("SEVERE", "ERROR"):
            problems.append(f"console: {entry['message'][:200]}")
    if screenshots is not None:
        height = min(driver.execute_script(_PAGE_HEIGHT), 20000)
        driver.set_window_size(width, height)
        name = str(page.relative_to(site).with_suffix(".png")).replace("/", "__")
        driver.save_screenshot(str(screenshots / name))
        driver.set_window_size(width, 900)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/_tools/check_site.py",
                                     description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--site", type=Path, default=ROOT / "docs" / "_build" / "html",
                        help="the built site (default docs/_build/html)")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="a folder for one full-page PNG per page")
    parser.add_argument("--width", type=int, default=1280, help="window width in pixels")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.error(f"no built site at {args.site}: run sphinx-build -b html docs "
                     f"docs/_build/html first")
    pages = sorted(p for p in args.site.rglob("*.html")
                   if not {"_static", "_sources", "_modules", "_images"} & set(p.parts))
    if args.screenshots is not None:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    driver = browser(args.width)
    failed = 0
    try:
        for page in pages:
            problems = check_page(driver, page, args.site, args.screenshots, args.width)
            status = "ok" if not problems else f"{len(problems)} problem(s)"
            print(f"{str(page.relative_to(args.site)):50s} {status}")
            for problem in problems:
                print(f"    {problem}")
            failed += bool(problems)
    finally:
        driver.quit()
    print(f"{len(pages)} pages, {failed} with problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
