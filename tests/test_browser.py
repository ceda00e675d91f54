"""End to end in a real browser: ``make lab`` serves JupyterLab, headless Chromium runs notebook 07
with ``interactive=True``, labels patches by clicking, presses "update model", and the test checks
that ``labels.jsonl`` grew and the F-measure plot changed. Screenshots of notebooks 01, 03 and 07
with their widgets go to ``runs/browser-test/``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when it runs as
root) and the ``selenium`` and ``jupyterlab`` packages (the ``dev`` extra); skips with the reason
otherwise. Nothing is downloaded: selenium is pointed at the system's chromedriver.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
OUT = ROOT / "runs" / "browser-test"

pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER), reason="no headless browser: apt-get install chromium chromium-driver"
    ),
    pytest.mark.timeout(900),
    pytest.mark.notebooks,
    pytest.mark.browser,
]

#: Small settings so each notebook runs in seconds inside the browser (the quick preset's values).
QUICK = {
    "01_preprocessing": {"n_examples": 2},
    "03_lenet_egl": None,  # filled from the quick preset
    "07_label_with_egl": None,
}


def _params(stem: str, run_dir: Path) -> dict:
    from fundus_nb import runs

    nb = ROOT / "notebooks" / f"{stem}.ipynb"
    declared = runs.notebook_parameters(nb)
    values = {k: v for k, v in runs.load_preset("quick").items() if k in declared}
    values["interactive"] = True
    if "run_dir" in declared:
        values["run_dir"] = str(run_dir)
    return values


def _prepare(folder: Path, stem: str, run_dir: Path) -> Path:
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(ROOT / "notebooks" / f"{stem}.ipynb"))
    nb = parameterize_notebook(nb, _params(stem, run_dir))
    path = folder / f"{stem}.ipynb"
    nbformat.write(nb, str(path))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install -e '.[lab]')")
    folder = tmp_path_factory.mktemp("lab")
    run_dir = folder / "run"
    for stem in QUICK:
        _prepare(folder, stem, run_dir)
    port, token = _free_port(), secrets.token_hex(16)
    args = f"--no-browser --port {port} --IdentityProvider.token={token} --ServerApp.open_browser=False"
    proc = subprocess.Popen(
        ["make", "-C", str(ROOT), "--no-print-directory", "lab", f"LAB_DIR={folder}", f"LAB_ARGS={args}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    url = None
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline and url is None:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if f"127.0.0.1:{port}/lab" in line:
            url = f"http://127.0.0.1:{port}"
    if url is None:
        os.killpg(proc.pid, 15)
        pytest.fail("make lab did not print its URL within 180 s:\n" + "".join(lines[-30:]))
    yield {"url": url, "token": token, "folder": folder, "run_dir": run_dir}
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a busy kernel can keep the server from stopping: end it
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1800"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    drv.set_page_load_timeout(120)
    yield drv
    drv.quit()


def _by_text(drv, css: str, text: str):
    from selenium.webdriver.common.by import By

    return [e for e in drv.find_elements(By.CSS_SELECTOR, css) if e.text.strip() == text and e.is_displayed()]


def _wait(predicate, timeout: float, what: str, drv=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.5)
    if drv is not None:
        OUT.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(OUT / "timeout.png"))
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _open_and_run_all(drv, lab, stem: str) -> None:
    drv.get(f"{lab['url']}/lab/tree/{stem}.ipynb?token={lab['token']}")
    _wait(lambda: _by_text(drv, ".lm-MenuBar-itemLabel", "Run"), 120, "the JupyterLab menu bar", drv)
    _wait(lambda: drv.find_elements("css selector", ".jp-Notebook .jp-Cell"), 60, "the notebook's cells", drv)
    time.sleep(2)  # let the kernel start
    _by_text(drv, ".lm-MenuBar-itemLabel", "Run")[0].click()
    _wait(lambda: _by_text(drv, ".lm-Menu-itemLabel", "Run All Cells"), 30, "the Run menu", drv)[0].click()


def _labels(lab) -> list[dict]:
    path = lab["run_dir"] / "labelling" / "labels.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _plot_sources(drv) -> list[str]:
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):  # a figure replaced while it is read (the update redraws them) is read again
        try:
            return [e.get_attribute("src")[-200:] for e in drv.find_elements("css selector", ".widget-output img")]
        except StaleElementReferenceException:
            time.sleep(0.25)
    raise AssertionError("the widget's figures kept being replaced for 5 s")


def test_labelling_widget_in_jupyterlab_with_chromium(lab, browser):
    drv = browser
    OUT.mkdir(parents=True, exist_ok=True)
    _open_and_run_all(drv, lab, "07_label_with_egl")
    _wait(lambda: _by_text(drv, "button", "update model"), 420, "the labelling widget", drv)
    _wait(lambda: len(_plot_sources(drv)) >= 3, 60, "the widget's figures", drv)
    before_labels = sum(e["event"] == "label" for e in _labels(lab))
    before_plots = _plot_sources(drv)
    exudate = _by_text(drv, "button", "exudate")
    healthy = _by_text(drv, "button", "healthy")
    exudate[0].click()
    healthy[1].click()
    _wait(lambda: sum(e["event"] == "label" for e in _labels(lab)) >= before_labels + 2, 60,
          "two answers in labels.jsonl", drv)
    _by_text(drv, "button", "update model")[0].click()
    hist = lab["run_dir"] / "labelling" / "labelling_history.json"
    _wait(lambda: hist.is_file() and len(json.loads(hist.read_text())["updates"]) >= 1, 120,
          "the model update", drv)
    _wait(lambda: _plot_sources(drv) != before_plots, 60, "the plots to change after the update", drv)
    answers = [e for e in _labels(lab) if e["event"] == "label"][-2:]
    assert [a["label"] for a in answers] == ["exudate", "healthy"]
    top = drv.find_elements("css selector", ".widget-html-content")
    drv.execute_script("arguments[0].scrollIntoView({block: 'start'});", top[-1])
    time.sleep(1)
    drv.save_screenshot(str(OUT / "07_label_with_egl.png"))
    status = [s.get_attribute("textContent") for s in drv.find_elements("css selector", ".widget-html-content")]
    assert any("labels" in s and "last update" in s for s in status), status


@pytest.mark.parametrize("stem,widget_text", [("01_preprocessing", "alpha"), ("03_lenet_egl", "upto_round")])
def test_screenshots_of_notebooks_with_widgets(lab, browser, stem, widget_text):
    drv = browser
    _open_and_run_all(drv, lab, stem)
    _wait(lambda: drv.find_elements("css selector", ".jp-OutputArea-output img"), 300, f"{stem}'s figures", drv)
    # tqdm.auto draws ipywidgets progress bars in JupyterLab: wait for the notebook's own slider
    _wait(lambda: [e for e in drv.find_elements("css selector", ".widget-label") if widget_text in e.text],
          420, f"{stem}'s sliders", drv)
    sliders = drv.find_elements("css selector", ".widget-slider")
    assert sliders, f"{stem} shows no slider"
    drv.execute_script("arguments[0].scrollIntoView({block: 'start'});", sliders[0])
    time.sleep(1)
    drv.save_screenshot(str(OUT / f"{stem}.png"))
    assert (OUT / f"{stem}.png").stat().st_size > 10_000
