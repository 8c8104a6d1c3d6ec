"""A real browser on the notebooks: JupyterLab on loopback, Debian's Chromium driven by
Playwright (PyPI; no browser download). The executed notebook 07 of the series run
(conftest's ``series_run``) must show its figures, and the explorer, run live, must redraw
when another clip is picked. Screenshots go to the test's folder (and to
``$AVSC_SCREENSHOTS`` when set)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = next(
    (
        p
        for p in (os.environ.get("AVSC_CHROMIUM"), shutil.which("chromium"))
        if p and Path(p).exists()
    ),
    None,
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="browser test skipped: no Chromium here (Debian: apt-get install chromium; "
        ".ci/run installs it where apt is available)",
    ),
]
# as this machine's closed network needs: no background connections, no sandbox as root
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(series_run, tmp_path):
    """JupyterLab serving the series run's folder on loopback: ``(url, process)``."""
    base, _, _ = series_run
    port, token = _free_port(), "avsc-test"
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={base}",
            "--LabApp.news_url=",
            "--LabServerApp.extension_manager=readonly",
            *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={  # a server of its own: no workspace, session or setting of another run
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter" / "config"),
            "JUPYTER_DATA_DIR": str(tmp_path / "jupyter" / "data"),
            "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter" / "runtime"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "jupyter" / "workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "jupyter" / "settings"),
        },
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyter.log').read_text()}")
            time.sleep(0.5)
    yield f"{url}/lab/tree/runs/paper-rehearsal/07_results.ipynb?token={token}", proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _shot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=False)
    extra = os.environ.get("AVSC_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


def _inked(data_url: str) -> float:
    """The fraction of a PNG data URL's pixels that are not white."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    png = base64.b64decode(data_url.split(",", 1)[1])
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return float(np.mean(np.abs(rgb - 255).sum(axis=-1) > 30))


def _dismiss_dialogs(page, seconds: float = 5) -> None:
    """Accept the dialogs JupyterLab may open on its own (its kernel choice), waiting a few
    seconds for one to appear."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            print("JupyterLab dialog:", " ".join(dialog.first.inner_text().split()))
            dialog.locator(".jp-mod-accept").first.click()
            deadline = time.time() + 1
        page.wait_for_timeout(250)


def test_jupyterlab_shows_the_figures_and_the_explorer_reacts(lab, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    url, _ = lab
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, timeout=120_000)
        # the executed notebook: its saved figures render as images
        images = page.locator(".jp-Notebook .jp-RenderedImage img")
        images.first.wait_for(timeout=120_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-Notebook .jp-RenderedImage img')]"
            ".filter(i => i.complete && i.naturalWidth > 100).length >= 4",
            timeout=60_000,
        )
        assert images.count() >= 4  # confusion, per class, learning curves, explorer picture
        news = page.get_by_role("button", name="No")  # JupyterLab's news prompt, if shown
        if news.count():
            news.first.click()
        images.nth(0).scroll_into_view_if_needed()
        _shot(page, tmp_path / "1_executed_notebook_figures.png")

        # run it live: the explorer widget appears and follows the clip picker
        _dismiss_dialogs(page)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        picker = page.locator(".widget-dropdown select").first
        picker.wait_for(timeout=180_000)
        view = page.locator(".widget-output .jp-RenderedImage img").first
        view.wait_for(timeout=60_000)
        first = view.get_attribute("src")
        picker.scroll_into_view_if_needed()
        _shot(page, tmp_path / "2_explorer_first_clip.png")
        options = picker.locator("option").all_inner_texts()
        assert len(options) > 1
        picker.select_option(label=options[2])
        page.wait_for_function(  # the new view, decoded and laid out at full width
            "(old) => { const i = document.querySelector('.widget-output .jp-RenderedImage img');"
            " return i && i.src !== old && i.complete && i.naturalWidth > 100"
            " && i.getBoundingClientRect().width > 600; }",
            arg=first,
            timeout=60_000,
        )
        page.evaluate(  # fully decoded before the screenshot
            "async () => document.querySelector('.widget-output .jp-RenderedImage img').decode()"
        )
        # the redrawn view is a drawing, not a blank canvas (widget callbacks once drew blanks)
        src = page.evaluate("() => document.querySelector('.widget-output img').src")
        assert _inked(src) > 0.2 and _inked(first) > 0.2
        page.locator(".widget-output .jp-RenderedImage img").first.scroll_into_view_if_needed()
        page.mouse.wheel(0, 120)  # JupyterLab paints a scrolled notebook's outputs lazily
        page.wait_for_timeout(1000)
        assert page.locator(".widget-output audio").count() == 1  # the segment, to listen to
        _shot(page, tmp_path / "3_explorer_other_clip.png")
        browser.close()
    for name in ("1_executed_notebook_figures", "2_explorer_first_clip", "3_explorer_other_clip"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
