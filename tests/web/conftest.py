"""The browser of the web tests: Debian's Chromium, headless, driven by Playwright.

Playwright is pointed at /usr/bin/chromium (``make pytest`` installs it with
apt-get when it is missing); its own browser download is never used, so the
tests run without the internet.  Each page records its console errors and
uncaught exceptions, which a test asserts are none.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    async_playwright,
)

CHROMIUM = Path(os.environ.get("HUSHLIGHT_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"

__all__ = ["CHROMIUM", "SCREENSHOTS", "Web", "browser"]


class Web:
    """A headless Chromium; pages made by `new_page` collect their console errors."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.errors: list[str] = []  # console errors and uncaught exceptions of every page
        self.contexts: list[BrowserContext] = []

    async def new_page(self, **context_options: object) -> Page:
        context = await self.browser.new_context(**context_options)  # type: ignore[arg-type]
        self.contexts.append(context)
        page = await context.new_page()
        self.watch(page)
        return page

    def watch(self, page: Page) -> None:
        """Record `page`'s console errors and uncaught exceptions in `errors`."""

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.errors.append(f"{page.url}: console error: {message.text}")

        def exception(error: Error) -> None:
            self.errors.append(f"{page.url}: uncaught exception: {error.message}")

        page.on("console", console)
        page.on("pageerror", exception)

    async def screenshot(self, page: Page, name: str, *, full_page: bool = True) -> Path:
        """Save `page` as build/screenshots/<name>.png and return the path."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"screenshot name {name!r} must be letters, digits, '.', '_' or '-'")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await page.screenshot(path=str(path), full_page=full_page)
        return path


def _check_chromium() -> None:
    if not CHROMIUM.is_file():
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: run `make pytest` (it installs the chromium package "
            "with apt-get) or set HUSHLIGHT_CHROMIUM to a Chromium binary"
        )


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Web]:
    """Headless Debian Chromium (--no-sandbox when running as root, which it refuses otherwise)."""
    _check_chromium()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        web = Web(chromium)
        try:
            yield web
        finally:
            for context in web.contexts:
                await context.close()
            await chromium.close()
