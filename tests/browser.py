"""Drive JupyterHub + JupyterLab in Debian's headless chromium, as a user would.

One function, run_lab_session(): log in, start the server, open JupyterLab,
create a Python 3 notebook, run one cell and return its output text.

It uses Playwright's sync API with Debian's /usr/bin/chromium (`make test-deps`
installs it); Playwright's own browser download is never needed (and fails on
machines without internet). Chromium runs as root here, which needs
--no-sandbox, and on a closed network it needs the background-networking flags
below, or it keeps trying (and failing) to reach Google's hosts.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import tempfile
import time
import urllib.parse
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _wrapper(launcher: list[str], directory: Path) -> Path:
    """An executable that runs chromium under the launcher (e.g. nsenter -t PID -n).

    Playwright talks to the browser over inherited pipes (fds 3 and 4), which
    survive the exec chain, so any launcher that execs its command works.
    """
    path = directory / "chromium"
    path.write_text(f'#!/bin/sh\nexec {shlex.join([*launcher, CHROMIUM])} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def run_lab_session(
    base_url: str,
    username: str,
    password: str,
    code: str = "print(6*7)",
    *,
    screenshot: Path | None = None,
    timeout: float = 180,
    launcher: list[str] | None = None,
) -> str:
    """Log in at base_url, start the server, run `code` in a new notebook; return its output.

    base_url is the hub's public URL without a trailing slash (e.g.
    http://127.0.0.1:8000). The flow is a user's: /hub/login form, /hub/spawn
    (the default spawn flow, no options form), the spawn-pending page,
    /user/<name>/lab?reset (a default workspace, so repeated sessions for one
    user start alike), the launcher's "Python 3" notebook card (File > New >
    Notebook if there is no launcher, accepting the kernel dialog), the first
    cell, Shift+Enter. The returned text is the first cell's output, stripped, once
    the cell has finished (its prompt shows an execution count).

    screenshot: where to save a PNG of the page at the end (also on failure).
    On failure without it, a screenshot goes to a temporary file; either way
    the exception gets a note with its path, the page's URL and the browser
    console's last errors. timeout: overall deadline in seconds. launcher: a
    command prefix to run chromium under, e.g. ["nsenter", "-t", PID, "-n"].
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    base_url = base_url.rstrip("/")
    deadline = time.monotonic() + timeout
    user_prefix = f"{base_url}/user/{urllib.parse.quote(username, safe='')}/"

    def left_ms(cap: float | None = None) -> float:
        """Milliseconds until the deadline (at least 1 s), at most cap seconds."""
        left = deadline - time.monotonic()
        if cap is not None:
            left = min(left, cap)
        return max(left, 1.0) * 1000

    console: list[str] = []
    with tempfile.TemporaryDirectory(prefix="barehub-browser-") as tmp:
        executable = _wrapper(launcher, Path(tmp)) if launcher else Path(CHROMIUM)
        with sync_playwright() as pw:
            # Playwright makes (and removes) a new empty profile dir itself:
            # --user-data-dir is refused in args for launch().
            browser = pw.chromium.launch(
                executable_path=str(executable), args=CHROMIUM_ARGS, headless=True,
                timeout=left_ms(60),
            )
            page = None
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.on("console", lambda m: m.type == "error" and console.append(m.text))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                page.set_default_timeout(left_ms())

                # --- log in with the hub's form
                page.goto(f"{base_url}/hub/login", timeout=left_ms(30))
                page.fill("#username_input", username)
                page.fill("#password_input", password)
                with page.expect_navigation(timeout=left_ms(30)):
                    page.click("#login_submit")
                if "/hub/login" in page.url:
                    error = page.locator(".login_error")
                    raise AssertionError(
                        "login failed: " + (error.inner_text() if error.count() else page.url))

                # --- start the server: /hub/spawn starts it (no options form),
                # shows spawn-pending, then redirects to the server when ready
                page.goto(f"{base_url}/hub/spawn", timeout=left_ms(30))
                page.wait_for_url(lambda u: u.startswith(user_prefix), timeout=left_ms())
                # lab?reset: a default workspace (just the launcher) even when
                # an earlier session left notebooks open for this user
                page.goto(user_prefix + "lab?reset", timeout=left_ms(60))

                # --- JupyterLab loaded: the launcher (a fresh workspace opens one)
                card = page.locator('.jp-LauncherCard[data-category="Notebook"]').first
                try:
                    card.wait_for(state="visible", timeout=left_ms(60))
                except PlaywrightError:
                    # no launcher (a restored workspace): File > New > Notebook
                    page.locator("#jp-MainMenu").get_by_text("File", exact=True).click()
                    page.locator(".lm-Menu").get_by_text("New", exact=True).click()
                    page.locator(".lm-Menu").get_by_text("Notebook", exact=True).click()
                else:
                    card.click()

                # --- the new notebook, once its kernel is idle; a dialog (e.g.
                # "Select Kernel" after File > New) may come before or after
                # the panel shows: accept its default (Python 3)
                notebook = page.locator(".jp-NotebookPanel").last
                idle = notebook.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
                accept = page.locator(".jp-Dialog .jp-mod-accept")
                for _ in range(5):
                    idle.or_(accept).first.wait_for(state="attached", timeout=left_ms(90))
                    if not accept.count():
                        break
                    accept.first.click(timeout=left_ms(10))
                    accept.first.wait_for(state="detached", timeout=left_ms(10))
                _dismiss_toasts(page)

                # --- type the code into the first cell and run it
                cell = notebook.locator(".jp-CodeCell").first
                editor = cell.locator(".cm-content")
                editor.click()
                # insert_text: no per-key auto-indent or bracket closing
                page.keyboard.insert_text(code)
                prompt = cell.locator(".jp-InputPrompt")
                # Shift+Enter can be lost while the kernel connection settles
                # (seen on a loaded machine: the cell advanced, nothing ran): run
                # the first cell again until it gets an execution count.
                for attempt in range(4):
                    page.keyboard.press("Shift+Enter")
                    try:
                        page.wait_for_function(
                            "el => /\\[\\d+\\]|\\[\\*\\]/.test(el.textContent)", arg=prompt.element_handle(),
                            timeout=min(15_000, left_ms()))
                        break
                    except PlaywrightError:
                        if attempt == 3:
                            raise
                        editor.click()
                page.wait_for_function(
                    "el => /\\[\\d+\\]/.test(el.textContent)", arg=prompt.element_handle(),
                    timeout=left_ms(60))
                outputs = cell.locator(".jp-OutputArea-output")
                text = "\n".join(t.strip() for t in outputs.all_inner_texts()).strip()
                if screenshot is not None:
                    page.screenshot(path=str(screenshot))
                return text
            except BaseException as e:
                if screenshot is None:
                    fd, name = tempfile.mkstemp(prefix="barehub-lab-failure-", suffix=".png")
                    os.close(fd)
                shot = screenshot if screenshot is not None else Path(name)
                note = f"browser at {page.url if page else '(no page)'}"
                try:
                    if page is not None:
                        page.screenshot(path=str(shot), timeout=10_000)
                        note += f"; screenshot: {shot}"
                except Exception as shot_error:  # noqa: BLE001 - the original error matters more
                    note += f"; no screenshot ({shot_error})"
                if console:
                    note += "\nbrowser console errors (last 10):\n" + "\n".join(console[-10:])
                e.add_note(note)
                raise
            finally:
                browser.close()


def _dismiss_toasts(page) -> None:
    """Close JupyterLab's first-run toasts (e.g. 'get notified about news?'), best effort."""
    toasts = page.locator(".Toastify__toast")
    for _ in range(toasts.count()):
        toast = toasts.first
        try:
            no = toast.get_by_role("button", name=re.compile(r"^(No|Dismiss)$"))
            (no.first if no.count() else toast.locator(".jp-Toast-closeButton, button[aria-label=Close]").first
             ).click(timeout=2000)
        except Exception:  # noqa: BLE001 - a toast is never essential
            break
