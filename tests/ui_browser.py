"""Drive MLflow's UI, served by `ablate ui`, in a real headless Chromium (Debian's `chromium`
and `chromium-driver`, through selenium) as a first-time user: a fresh profile, nothing stored
in the browser beforehand, a 1600x1000 window. The code path of ``tests/test_ui_browser.py``,
which also regenerates the README's screenshot from the quick study::

    ABLATE_UI_SCREENSHOT=reports/ui/runs.png python -m pytest tests/test_ui_browser.py -m slow

Everything synchronises on what the page shows or the command prints (WebDriverWait, the lines
of `ablate ui`), never on sleeps; the timeouts are generous for a busy 2-core machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STUDY = '''
import math
from ablate import Study


def train(config, run):
    """A stand-in for training: a smooth curve whose level depends on the factors and the seed,
    its values with as many digits as a real accuracy; one variant diverges on seed 2 (a NaN
    loss)."""
    level = 0.9 - 0.15 * (not config["net.batch_norm"]) + 0.03 * (config["net.kernel_size"] == 5)
    for epoch in range(config["opt.epochs"]):
        acc = level * (1 - 0.5 ** (epoch + 1)) + 0.01 * ((run.seed * 7 + epoch) % 3)
        acc = round(acc * 997) / 997  # right answers out of 997
        diverges = (not config["net.batch_norm"] and config["net.kernel_size"] == 5
                    and run.seed == 2 and epoch == 1)
        loss = math.nan if diverges else 1.0 - acc
        run.log({"train_loss": loss, "val_acc": acc}, step=epoch)


study = Study(
    "ui-demo",
    train=train,
    config={"opt.epochs": 3},
    factors={"net.batch_norm": [True, False], "net.kernel_size": [3, 5]},
    design="full_factorial",
    seeds=3,
    metric="val_acc",
)
'''
QUICK = Path(__file__).resolve().parents[1] / "studies" / "quick.py"  # the README's study

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1600,1000")
VIEWPORT = (1600, 1000)  # the page's size in CSS pixels, whatever the window's frame takes
WAIT_S = 240  # generous: the UI's first load compiles a large bundle on a busy machine
UI_START_S = 600
TRAINING = "machine_learning"  # MLflow's name for its model-training view (URL: workflowType)
GENAI_PAGES = ("/overview", "/chat-sessions", "/judges", "/review-queue", "/evaluation-runs")


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) of the system's Chromium, or None where there is none."""
    browser = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser",
                                                             "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(folder: Path, source: Path | None = None) -> tuple[Path, str]:
    """Train the study ``source`` (default: the demo study above, written into ``folder``) into
    a new store in ``folder`` and write its report there; returns (study file, tracking URI)."""
    from ablate.cli import main

    if source is None:
        source = folder / "ui_demo.py"
        source.write_text(textwrap.dedent(STUDY))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    common = ["--tracking-uri", uri]
    assert main(["run", str(source), *common, "--checkpoint-dir", str(folder / "ck")]) == 0
    assert main(["report", str(source), *common, "--out", str(folder / "report")]) == 0
    return source, uri


@dataclass
class Served:
    """`ablate ui` running: its process, every line it printed so far (read on while it runs),
    the study's two URLs and the server's log file it named."""

    proc: subprocess.Popen
    lines: list[str]
    url: str
    ranked: str
    log: Path


@contextmanager
def ablate_ui(uri: str, study: str, tmp: Path | None = None) -> Iterator[Served]:
    """`ablate ui` on ``uri`` (its temporary files, the server's log among them, in ``tmp``);
    yields once it has printed ``study``'s two URLs."""
    port = free_port()
    env = {**os.environ, **({"TMPDIR": str(tmp)} if tmp else {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=env)
    lines: list[str] = []
    ended: list[bool] = []
    printed = threading.Condition()

    def pump() -> None:
        for line in proc.stdout:
            with printed:
                lines.append(line.rstrip("\n"))
                printed.notify_all()
        with printed:
            ended.append(True)
            printed.notify_all()

    threading.Thread(target=pump, daemon=True).start()
    prefixes = (f"  study {study}: ", f"  study {study}, variants ranked by ")
    try:
        urls: dict[str, str] = {}
        with printed:
            seen = 0
            deadline = time.monotonic() + UI_START_S
            while len(urls) < 2:
                if not printed.wait_for(lambda: len(lines) > seen or ended,
                                        max(deadline - time.monotonic(), 0.1)):
                    raise AssertionError(f"`ablate ui` printed no URLs for {study} within "
                                         f"{UI_START_S} s:\n" + "\n".join(lines))
                if ended and len(lines) == seen:
                    raise AssertionError("`ablate ui` exited:\n" + "\n".join(lines))
                for line in lines[seen:]:
                    for prefix in prefixes:
                        if line.startswith(prefix):
                            urls[prefix] = line.split(": ", 1)[1].strip()
                seen = len(lines)
            logs = [m.group(1) for line in lines
                    for m in [re.search(r"the server's log: (\S+?)\)", line)] if m]
        assert logs, "`ablate ui` did not say where the server's log is:\n" + "\n".join(lines)
        yield Served(proc, lines, urls[prefixes[0]], urls[prefixes[1]], Path(logs[-1]))
    finally:  # `ablate ui`, MLflow's server and its worker share one session
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def session_processes(pid: int) -> list[str]:
    """The command lines of the processes in ``pid``'s session."""
    ps = subprocess.run(["ps", "-e", "-o", "sid=,args="], capture_output=True, text=True).stdout
    return [line.split(None, 1)[1] for line in ps.splitlines()
            if line.split(None, 1)[0] == str(pid) and len(line.split(None, 1)) > 1]


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium driven by selenium, with a fresh profile (nothing stored: a
    first-time user) and a 1600x1000 page; nothing is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    assert paths is not None, "no Chromium on this machine"
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="ablate-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    try:
        width, height = VIEWPORT
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


RUN_NAME_COL = "attributes.`Run Name`"
RUN_NAME = f'div[col-id="{RUN_NAME_COL}"]'
VERDICT = "tags.`ablate.verdict`"

# The column ids whose header is wholly in sight: inside the window, not scrolled out of the
# table, not under anything else (the Assistant panel): the page's own element at both ends.
IN_SIGHT_JS = """
return Array.from(document.querySelectorAll('div.ag-header-cell[role="columnheader"]'))
  .filter(c => {
    const r = c.getBoundingClientRect();
    if (r.width < 8) return false;
    const y = r.top + r.height / 2;
    return [r.left + 3, r.right - 3].every(x => x >= 0 && x < window.innerWidth
                                             && c.contains(document.elementFromPoint(x, y)));
  }).map(c => c.getAttribute('col-id'));
"""
# Whether each cell's text is cut: the cell, or an element in it that ends its text with an
# ellipsis when cut, holds more than it shows
CUT_JS = """
return arguments[0].map(c => [c, ...c.querySelectorAll('*')]
  .filter(e => e === c || getComputedStyle(e).textOverflow === 'ellipsis')
  .some(e => e.scrollWidth > e.clientWidth));
"""


@dataclass
class RunsView:
    """What a runs page showed: its URL, the view MLflow was in (:func:`workflow_types`), the
    run names top-level (collapsed), the column headers, the columns wholly in sight, and the
    metric's and the verdict's cell of each top-level row, and the table's footer."""

    url: str
    workflow: set[str]
    top_rows: list[str]
    headers: list[str]
    in_sight: list[str]
    metric_cells: dict[str, str]
    verdict_cells: dict[str, str]
    footer: str


def waiting(driver):
    """A WebDriverWait of WAIT_S that also tries again where the page redrew the element it
    was reading or clicking (React replaces elements as data arrives) or drew something over
    it for a moment."""
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, ignored_exceptions=(
        StaleElementReferenceException, ElementClickInterceptedException))


def click(driver, by: str, selector: str) -> None:
    """Click the element once it is there (again, where the page redrew it meanwhile)."""
    def clicked(d) -> bool:
        d.find_element(by, selector).click()
        return True

    waiting(driver).until(clicked)


def _texts(driver, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, css) if e.text.strip()]


def _headers(driver) -> list[str]:
    """The column headers left to right (their ``aria-colindex``; the DOM order differs)."""
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, 'div.ag-header-cell[role="columnheader"]')
    indexed = {int(c.get_attribute("aria-colindex")): c.text.strip() for c in cells
               if c.get_attribute("aria-colindex") and c.text.strip()}
    return [indexed[k] for k in sorted(indexed)]


def row_names(driver) -> list[str]:
    return _texts(driver, f'div[role="row"] {RUN_NAME} a')


def in_sight(driver) -> list[str]:
    return driver.execute_script(IN_SIGHT_JS)


def workflow_types(driver) -> set[str]:
    """The view MLflow's UI is in, read from its sidebar once drawn: ``machine_learning`` (the
    model-training view) where it links the experiment's runs page, ``genai`` where it links
    GenAI pages (evaluation runs, judges, sessions, ...); and the ``workflowType`` its links
    carry, where they carry one."""
    from selenium.webdriver.common.by import By
    def views(d) -> set[str]:
        hrefs = [a.get_attribute("href") or "" for a in d.find_elements(By.CSS_SELECTOR, "nav a")]
        found = {m.group(1) for h in hrefs for m in [re.search(r"workflowType=(\w+)", h)] if m}
        paths = [h.split("?")[0] for h in hrefs]
        if any(p.endswith(GENAI_PAGES) for p in paths):
            found.add("genai")
        if any(re.search(r"/experiments/\w+/runs$", p) for p in paths):
            found.add(TRAINING)
        return found

    return waiting(driver).until(views)


def _cells(driver, names: list[str], col: str) -> dict[str, object]:
    """The cell of column ``col`` in the row of each run name (a row's name is in the table's
    pinned part, its other cells in the centre part: the row index joins them)."""
    from selenium.webdriver.common.by import By

    cells = {}
    for name in names:
        row = driver.find_element(By.XPATH, f'//div[@role="row"][.//div[@col-id="attributes.'
                                            f'`Run Name`"]//a[normalize-space()="{name}"]]')
        index = row.get_attribute("row-index")
        cells[name] = driver.find_element(By.CSS_SELECTOR, f'div[role="row"][row-index='
                                                           f'"{index}"] div[col-id="{col}"]')
    return cells


def cells_cut(driver, names: list[str], col: str) -> dict[str, bool]:
    """For each run name, whether its cell of column ``col`` is cut (shown with an ellipsis)."""
    def read(d) -> dict[str, bool]:
        cells = _cells(d, names, col)
        return dict(zip(cells, d.execute_script(CUT_JS, list(cells.values()))))

    return waiting(driver).until(read)


def open_runs(driver, url: str, metric: str, rows: int) -> RunsView:
    """Open a runs page (``url``) and wait for ``rows`` top-level rows and the metric's column."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait = waiting(driver)
    driver.get(url)
    wait.until(lambda d: len(row_names(d)) >= rows)
    header = f'div[role="columnheader"][col-id="metrics.`{metric}`"]'
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, header)))
    wait.until(lambda d: "matching runs" in d.find_element(By.TAG_NAME, "body").text)
    return wait.until(lambda d: _read_runs(d, metric))


def _read_runs(driver, metric: str) -> RunsView:
    from selenium.webdriver.common.by import By

    top = row_names(driver)
    footer = next(line for line in driver.find_element(By.TAG_NAME, "body").text.splitlines()
                  if line.endswith("matching runs"))
    return RunsView(driver.current_url, workflow_types(driver), top, _headers(driver),
                    in_sight(driver),
                    {k: e.text.strip() for k, e in _cells(driver, top, f"metrics.`{metric}`")
                     .items()},
                    {k: e.text.strip() for k, e in _cells(driver, top, VERDICT).items()},
                    footer)


def expand(driver, variant: str, seeds: list[str]) -> list[str]:
    """Expand a variant's row and wait for its seed rows; returns the rows' names."""
    from selenium.webdriver.common.by import By

    click(driver, By.XPATH, f'//div[@col-id="attributes.`Run Name`"]'
                            f'[.//a[normalize-space()="{variant}"]]//button')
    waiting(driver).until(lambda d: set(seeds) <= set(row_names(d)))
    return row_names(driver)


def assistant_open(driver) -> bool:
    """Whether MLflow's Assistant panel is drawn (a quarter of the window, on the right)."""
    from selenium.webdriver.common.by import By

    return any(e.size["width"] > 200
               for e in driver.find_elements(By.CSS_SELECTOR, 'div[data-assistant-ui="true"]'))


def open_assistant(driver) -> None:
    """Open MLflow's Assistant panel (its button, bottom right) and wait until it is drawn."""
    from selenium.webdriver.common.by import By

    if not assistant_open(driver):
        click(driver, By.CSS_SELECTOR, 'button[data-assistant-ui="true"]')
    waiting(driver).until(assistant_open)


def open_run(driver, name: str) -> str:
    """Click the link of the run ``name`` and wait for its page; returns the page's text."""
    from selenium.webdriver.common.by import By

    click(driver, By.XPATH, f'//a[normalize-space()="{name}"]')
    waiting(driver).until(
        lambda d: re.search(r"/runs/\w+", d.current_url) and _run_title(d) == name)
    return driver.find_element(By.TAG_NAME, "body").text


def _run_title(driver) -> str:
    from selenium.webdriver.common.by import By

    titles = [e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, "h2")]
    return titles[0] if titles else ""


def open_chart(driver, metric: str) -> object:
    """On a run's page, open the "Model metrics" tab, search its charts for ``metric`` (the
    page draws only the charts in view: a run logs many metrics) and wait until the chart
    titled ``metric`` has its plot drawn; returns its card."""
    from selenium.webdriver.common.by import By

    wait = waiting(driver)
    click(driver, By.XPATH, '//button[@role="tab"][normalize-space()="Model metrics"]')

    def typed(d) -> bool:
        search = d.find_element(By.CSS_SELECTOR, 'input[placeholder="Search metric charts"]')
        search.clear()
        search.send_keys(metric)
        return True

    wait.until(typed)
    card = ('//div[@data-testid="experiment-view-compare-runs-card"]'
            f'[.//*[normalize-space()="{metric}"]]')

    def drawn(d):
        cards = d.find_elements(By.XPATH, card)
        plots = cards[0].find_elements(By.CSS_SELECTOR, ".js-plotly-plot") if cards else []
        return cards[0] if plots and plots[0].is_displayed() else None

    return wait.until(drawn)
