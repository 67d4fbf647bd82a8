"""Drive MLflow's UI, served by `ablate ui`, in a real headless Chromium (Debian's `chromium`
and `chromium-driver`, through selenium): the code path of ``tests/test_ui_browser.py``.

Run as a script, it regenerates the README's screenshot of the runs view::

    python tests/ui_browser.py reports/ui/runs.png

Everything synchronises on what the page or the command prints (WebDriverWait, the lines of
`ablate ui`), never on sleeps; the timeouts are generous for a busy 2-core machine.
"""

from __future__ import annotations

import os
import queue
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
    """A stand-in for training: a smooth curve whose level depends on the factors and the seed;
    one variant diverges on seed 2 (a NaN loss)."""
    level = 0.9 - 0.15 * (not config["net.batch_norm"]) - 0.03 * (config["net.kernel_size"] == 5)
    for epoch in range(config["opt.epochs"]):
        acc = level * (1 - 0.5 ** (epoch + 1)) + 0.01 * ((run.seed * 7 + epoch) % 3)
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

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1600,900")
WAIT_S = 240  # generous: the UI's first load compiles a large bundle on a busy machine
UI_START_S = 600


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


def run_study(folder: Path) -> str:
    """Train the demo study and write its report into ``folder``; returns the tracking URI."""
    from ablate.cli import main

    study = folder / "ui_demo.py"
    study.write_text(textwrap.dedent(STUDY))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    common = ["--tracking-uri", uri]
    assert main(["run", str(study), *common, "--checkpoint-dir", str(folder / "ck")]) == 0
    assert main(["report", str(study), *common, "--out", str(folder / "report")]) == 0
    return uri


@dataclass
class Served:
    """`ablate ui` running: its process, the lines it printed, the study's URL."""

    proc: subprocess.Popen
    lines: list[str]
    url: str


@contextmanager
def ablate_ui(uri: str, study: str = "ui-demo") -> Iterator[Served]:
    """`ablate ui` on ``uri``; yields once it has said it is ready and printed ``study``'s URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            out.put(line.rstrip("\n"))
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline, url = time.monotonic() + UI_START_S, None
        while url is None:
            try:
                line = out.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                raise AssertionError(f"`ablate ui` printed no URL for {study} within "
                                     f"{UI_START_S} s:\n" + "\n".join(lines)) from None
            if line is None:
                raise AssertionError("`ablate ui` exited:\n" + "\n".join(lines))
            lines.append(line)
            prefix = f"  study {study}: "
            if line.startswith(prefix):
                url = line[len(prefix):].strip()
        yield Served(proc, lines, url)
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
    """A headless Chromium driven by selenium, with a fresh profile; nothing is downloaded."""
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
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


ASSISTANT_SEEN = "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"  # MLflow 3's local storage key
RUN_NAME = 'div[col-id="attributes.`Run Name`"]'


@dataclass
class RunsView:
    """What the runs page showed: run names top-level (collapsed) and after expanding one
    variant, the column headers, and the study metric's cell of each top-level row."""

    url: str
    top_rows: list[str]
    expanded_rows: list[str]
    headers: list[str]
    metric_cells: dict[str, str]
    page_text: str


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


def _row_names(driver) -> list[str]:
    return _texts(driver, f'div[role="row"] {RUN_NAME} a')


def browse_runs(driver, url: str, metric: str, expand: str, seeds: int) -> RunsView:
    """Open ``url`` as a returning user would (MLflow's assistant panel, which opens once on a
    browser's first visit, already dismissed), wait for the variant rows, expand ``expand`` and
    wait for its ``seeds`` seed rows. Every wait is on what the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    driver.get(url.split("/#/")[0] + "/health")  # same origin: its local storage
    driver.execute_script(f"localStorage.setItem('{ASSISTANT_SEEN}', 'true')")
    driver.get(url)
    wait.until(lambda d: expand in _row_names(d))
    metric_header = f'div[role="columnheader"][col-id="metrics.`{metric}`"]'
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, metric_header)))
    top = _row_names(driver)
    cells = {}
    for name in top:  # a row's name is in the pinned part, its metrics in the centre part
        row = driver.find_element(By.XPATH, f'//div[@role="row"][.//div[@col-id="attributes.'
                                            f'`Run Name`"]//a[normalize-space()="{name}"]]')
        index = row.get_attribute("row-index")
        cell = driver.find_element(By.CSS_SELECTOR, f'div[role="row"][row-index="{index}"] '
                                                    f'div[col-id="metrics.`{metric}`"]')
        cells[name] = cell.text.strip()
    headers = _headers(driver)
    button = driver.find_element(By.XPATH, f'//div[@col-id="attributes.`Run Name`"]'
                                           f'[.//a[normalize-space()="{expand}"]]//button')
    button.click()
    wait.until(lambda d: all(f"{expand} s{k}" in _row_names(d) for k in range(seeds)))
    return RunsView(driver.current_url, top, _row_names(driver), headers, cells,
                    driver.find_element(By.TAG_NAME, "body").text)


def screenshot(target: Path) -> RunsView:
    """The README's screenshot: the demo study's runs view with one variant expanded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        uri = run_study(Path(tmp))
        with ablate_ui(uri) as ui, chromium() as driver:
            view = browse_runs(driver, ui.url, "val_acc", "bn=off ks=5", 3)
            driver.save_screenshot(str(target))
    return view


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/ui/runs.png")
    view = screenshot(target)
    print(f"{target}: the runs view of {view.url}")
