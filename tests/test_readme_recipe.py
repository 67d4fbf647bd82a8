"""README "Scaling out with Ray", run as printed: its ``bash`` blocks, taken from README.md.

The blocks build a cluster on this machine (PostgreSQL of its own, the MLflow server on it, a
Ray head and a second node, each ``ray start`` with its own temp dir), run a study with
``ablate run --executor ray`` and ``ablate report``, and stop what they started. The test only
sets the placeholders of the first block (``WORK`` to a temp dir, the ports to free ones,
``PGPASS`` and ``STUDY``): if README's commands change, this runs the new ones. Between the run
and the stop it reads the results (MLflow, PostgreSQL, the report, which node ran what); after
the stop, no process that the recipe started may be left. Whatever happens, every process that
carries this run's marker (an environment variable, which every child inherits) is ended.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import psycopg
import pytest
from mlflow.tracking import MlflowClient

from tests.cluster import PG_INSTALL, free_port, postgres_bin, wait_until
from tests.test_ray import trial_runs

pytestmark = pytest.mark.slow  # a real two-node Ray cluster, MLflow server and PostgreSQL

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Scaling out with Ray"
MARKER = "ABLATE_RECIPE_RUN"  # in the recipe's environment: finds every process it started
START_TIMEOUT, STOP_TIMEOUT = 240, 120  # seconds; the recipe takes about 80 and 5 on 2 cores

# Three trials at once need three CPUs: the head's one and the second node's two. Each trial
# writes where its copy of the study file is (under the temp dir of the node that runs it).
STUDY = """
import time
from pathlib import Path

from ablate import Study

EVENTS = Path({events!r})


def train(config, run):
    with open(EVENTS, "a") as f:
        f.write(f"{{config['opt.width']}} {{run.seed}} {{__file__}}\\n")
    deadline = time.monotonic() + 120
    while len(EVENTS.read_text().splitlines()) < 3:  # the first three run at once
        if time.monotonic() > deadline:
            raise RuntimeError("three trials never ran at once: is the second node missing?")
        time.sleep(0.05)
    run.log({{"acc": 0.5 + 0.01 * config["opt.width"] + 0.003 * run.seed}}, step=0)


study = Study("recipe", train=train, factors={{"opt.width": [4, 8, 16]}}, seeds=2,
              metric="acc")
"""


def recipe_blocks(text: str | None = None) -> list[str]:
    """The ``bash`` blocks of README's "Scaling out with Ray" section, dedented, in order."""
    text = README.read_text() if text is None else text
    assert f"\n{SECTION}\n" in text, f"README.md has no section {SECTION!r}"
    section = text.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    blocks: list[str] = []
    lines = iter(section.splitlines())
    for line in lines:
        if line.strip() == "```bash":
            indent = len(line) - len(line.lstrip())
            body = []
            for inner in lines:
                if inner.strip() == "```":
                    break
                body.append(inner[indent:])
            blocks.append("\n".join(body) + "\n")
    return blocks


def set_placeholders(settings: str, values: dict[str, str]) -> str:
    """README's settings block with each ``NAME=value`` of ``values`` given the test's value
    (what the block derives from them, like ``CHECKPOINTS=$WORK/...``, follows)."""
    for name, value in values.items():
        pattern = re.compile(rf"(?<![\w$]){name}=\S+")
        assert len(pattern.findall(settings)) == 1, (
            f"README's settings block must set {name} once:\n{settings}")
        settings = pattern.sub(lambda _: f"{name}={shlex.quote(value)}", settings)
    return settings


def marked(token: str) -> list[int]:
    """The live processes whose environment holds ``MARKER=token``. (PostgreSQL's backends
    write their titles over theirs: the postmaster, which they end with, is found.)"""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie: already ended
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                found.append(int(entry))
        except OSError:
            continue
    return found


def describe(pids: list[int]) -> str:
    lines = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        lines.append(f"  {pid}: {cmd[:160]}")
    return "\n".join(lines)


def test_readme_has_the_recipe_in_order():
    blocks = recipe_blocks()
    assert len(blocks) >= 4, blocks
    settings, run, stop = blocks[0], blocks[-2], blocks[-1]
    assert all(line.startswith(("export ", "AS=")) for line in settings.splitlines()), settings
    assert "initdb" in "".join(blocks) and "mlflow server" in "".join(blocks)
    assert sum(b.count("ray start") for b in blocks) >= 2  # a head and another node
    assert "ablate run $STUDY --executor ray --address" in run and "ablate report" in run
    assert "kill" in stop and "pg_ctl" in stop and "ray stop" not in stop
    # a block found in a made-up section: indented in a list, dedented; other fences ignored
    text = "x\n## Scaling out with Ray\n  1. a\n     ```bash\n     echo 1\n       b\n     ```\n" \
           "```python\nno\n```\n## Next\n```bash\nno\n```\n"
    assert recipe_blocks(text) == ["echo 1\n  b\n"]


@pytest.mark.skipif(find_spec("ray") is None,
                    reason="ray is not installed: pip install -e '.[ray]'")
@pytest.mark.skipif(postgres_bin() is None,
                    reason=f"PostgreSQL's server programs are not installed: {PG_INSTALL}")
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (README uses it)")
@pytest.mark.skipif(os.geteuid() == 0 and not any(u.pw_name == "postgres" for u in pwd.getpwall()),
                    reason="as root, README runs PostgreSQL as the postgres user: there is none")
def test_the_readme_cluster_recipe_runs_as_printed():
    blocks = recipe_blocks()
    # not pytest's deep temp dirs: Ray's socket paths under WORK must stay short; as root,
    # PostgreSQL runs as the postgres user, who must be able to enter WORK (as in /tmp)
    work = Path(tempfile.mkdtemp(prefix="ablate-rc-"))
    here = Path(tempfile.mkdtemp(prefix="ablate-rc-run-"))  # where the commands run
    for folder in (work, here):
        folder.chmod(0o755)
    (here / "study").mkdir()
    events = here / "events"
    study = here / "study" / "recipe_study.py"
    study.write_text(STUDY.format(events=str(events)))
    ports: dict[str, str] = {}
    while len(set(ports.values())) < 4:  # four different free ports
        ports = {name: str(free_port())
                 for name in ("RAY_PORT", "RAY_CLIENT_PORT", "MLFLOW_PORT", "PGPORT")}
    password = secrets.token_hex(8)
    settings = set_placeholders(blocks[0], {"WORK": str(work), **ports, "PGPASS": password,
                                            "STUDY": str(study)})
    token = secrets.token_hex(8)
    # a user's shell: no Ray, MLflow or PostgreSQL settings but the recipe's own
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "PG"))}
    env.update({MARKER: token, "RAY_USAGE_STATS_ENABLED": "0",
                # ray, mlflow, ablate and python from this environment, as if activated
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})

    def run(name: str, body: str, timeout: float) -> str:
        script = here / f"{name}.sh"
        script.write_text(f"set -euxo pipefail\n{settings}\n{body}")
        log = here / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["bash", str(script)], stdout=out, stderr=subprocess.STDOUT,
                                    cwd=here, env=env, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
        output = log.read_text(errors="replace")
        if code != 0:
            logs = "".join(f"\n--- {p.name}:\n{p.read_text(errors='replace')[-2000:]}"
                           for p in sorted(work.glob("*.log")))
            raise AssertionError(f"README's recipe ({name}) "
                                 f"{'timed out' if code is None else f'exited {code}'}:\n"
                                 f"{output[-5000:]}{logs}")
        return output

    try:
        output = run("start-and-run", "\n".join(blocks[1:-1]), timeout=START_TIMEOUT)
        assert marked(token), "the recipe left no servers running"  # (else: nothing to stop)
        assert "trained now 6, already done 0" in output, output[-3000:]
        assert (here / "reports" / "recipe" / "report.md").exists(), output[-3000:]

        # the trials ran on both nodes, each from the copy of the study Ray shipped there
        lines = [line.split() for line in events.read_text().splitlines()]
        nodes = {Path(f).relative_to(work).parts[0] for _, _, f in lines}
        assert len(lines) == 6 and nodes == {"ray-head", "ray-node"}, lines

        # in the store: six finished trial runs, through the server, on PostgreSQL
        url = f"http://127.0.0.1:{ports['MLFLOW_PORT']}"
        runs = trial_runs(url, "recipe")
        assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
        client = MlflowClient(url)
        assert all(client.get_metric_history(r.info.run_id, "acc") for r in runs)
        with psycopg.connect(f"postgresql://mlflow:{password}@127.0.0.1:{ports['PGPORT']}"
                             "/mlflow") as db:
            ids = {row[0] for row in db.execute("SELECT run_uuid FROM runs")}
        assert {r.info.run_id for r in runs} <= ids
        # --allowed-hosts: a request naming a host:port it doesn't list is refused
        api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(urllib.request.Request(api, headers={"Host": "other:1"}))
        with urllib.request.urlopen(api) as answer:
            assert answer.status == 200

        # the stop: everything the recipe started ends, nothing else is needed
        run("stop", blocks[-1], timeout=STOP_TIMEOUT)
        try:
            wait_until(lambda: not marked(token), 60, "the processes the recipe started to end")
        except AssertionError:
            raise AssertionError(f"README's stop block left these running:\n"
                                 f"{describe(marked(token))}") from None
        assert not (work / "pg" / "data" / "postmaster.pid").exists()  # PostgreSQL stopped
    finally:
        data = work / "pg" / "data"
        if (data / "postmaster.pid").exists():  # PostgreSQL first, quickly (as the recipe runs it)
            as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            subprocess.run([*as_user, str(postgres_bin() / "pg_ctl"), "-D", str(data), "-m",
                            "immediate", "-w", "stop"], capture_output=True)
        for pid in marked(token):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not marked(token), 30, "the recipe's processes to end")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(here, ignore_errors=True)
