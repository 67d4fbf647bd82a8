"""`ablate plan` and study-file loading: the design table, and every bad input exits 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ablate.cli import main

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
from ablate import Study
from ablate.data import digits
from ablate.models import ConvNet

study = Study("cli", model=ConvNet, data=digits,
              config={"model.widths": (4, 8), "train.epochs": 1},
              factors={"model.batch_norm": [True, False], "model.kernel_size": [3, 5]},
              design="full_factorial", seeds=2)
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    # plan and every rejected input write nothing: no MLflow store, no checkpoints
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists()
    assert not (tmp_path / ".ablate").exists()


def write(tmp_path: Path, text: str, name: str = "study.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_plan_prints_every_variant_and_the_trial_count(tmp_path, capsys):
    assert main(["plan", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr().out
    labels = ("baseline", "kernel_size=5", "batch_norm=False", "batch_norm=False,kernel_size=5")
    for label in labels:
        assert f" {label} " in out
    assert "4 variants x 2 seeds [0, 1] = 8 trials; metric val_acc (max)" in out


def test_plan_set_and_seeds_overrides(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["plan", str(path), "--seeds", "5", "--set", "train.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "= 20 trials" in out
    main(["plan", str(path)])
    ids_default = capsys.readouterr().out.split("variant")[1]
    assert ids_default != out.split("variant")[1]  # a changed setting changes every id


def test_plan_shows_fractional_aliasing(tmp_path, capsys):
    text = GOOD.replace('"model.kernel_size": [3, 5]}',
                        '"model.kernel_size": [3, 5], "model.residual": [True, False]}')
    text = text.replace('design="full_factorial"', 'design="fractional"')
    assert main(["plan", str(write(tmp_path, text))]) == 0
    out = capsys.readouterr().out
    assert "resolution III" in out
    assert "model.residual = model.batch_norm:model.kernel_size" in out


@pytest.mark.parametrize(
    "source,args,message",
    [
        (None, ["missing.py"], "study file 'missing.py' does not exist"),
        ("x = (1,\n", [], "study.py:1: syntax error"),
        ("import nonexistent_pkg_xyz\n", [],
         "study.py:1: the study file raised ModuleNotFoundError"),
        ("x = 1\n", [], "defines no Study"),
        (GOOD + "\nother = Study('two', model=ConvNet, data=digits)\n", [],
         "defines 2 studies (cli, two). Fix: choose one with --study NAME"),
        (GOOD, ["--study", "clj"], "no study named 'clj'; did you mean 'cli'?"),
        (GOOD, ["--set", "train.epoch=3"], "did you mean 'train.epochs'"),
        (GOOD, ["--set", "model.batch_norm=False"], "is a factor"),
        (GOOD, ["--set", "train.lr=[0.1"], "is not a Python literal"),
        (GOOD, ["--set", "model.widths=(4, 8)", "--set", "data.batch_size={1: object}"],
         "is not a Python literal"),
        (GOOD.replace('"model.kernel_size": [3, 5]', '"model.kernel_size": [3, 4]'), [],
         "variant 'kernel_size=4' ("),
        (GOOD.replace('"model.batch_norm"', '"model.batchnorm"'), [],
         "study.py:6: invalid study: factor key 'model.batchnorm' is not accepted by ConvNet; "
         "did you mean 'model.batch_norm'?"),
        (GOOD.replace("seeds=2", "seeds=-1"), [], "at least one seed"),
        (GOOD.replace('"train.epochs": 1}', '"train.epochs": 1, "model.act": print}'), [],
         "config['model.act'] is not plain data"),
        (GOOD.replace("[3, 5]", "[3, len]"), [], "level <built-in function len> of factor"),
        (GOOD.replace("[3, 5]", "[3, 5]}, baseline={'model.kernel_size': 7"), [],
         "baseline value 7 for 'model.kernel_size' is not one of its levels"),
        (GOOD.replace('design="full_factorial"',
                      'design="full_factorial", constraints=lambda c: False'), [],
         "exclude every variant"),
        (GOOD.replace('Study("cli"', 'Study("my study/1"'), [],
         "can't be used as an MLflow experiment name"),
        (GOOD.replace('design="full_factorial"', 'design="fractional"').replace("[3, 5]",
                                                                              "[3, 5, 7]"),
         [], "two-level factors only"),
        # settings checked at plan time (each used to train and fail, or write runs first)
        (GOOD.replace("[True, False]", '["yes", "no"]'), [],
         "factor model.batch_norm='yes' does not fit: expected True or False. Fix: change the "
         "level (a string like 'no' is not False: write False)"),
        (GOOD, ["--set", "train.optimizer=sgdd"],
         "train.optimizer='sgdd' does not fit: expected one of 'sgd', 'adam', 'adamw'"),
        (GOOD, ["--set", "train.schedule=cosine"],
         "expected one of 'constant', 'sgdr', 'onecycle'"),
        (GOOD, ["--set", "train.lr=-1"], "train.lr=-1 does not fit: must be greater than 0"),
        (GOOD, ["--set", "train.epochs=0"], "train.epochs=0 does not fit: must be greater"),
        (GOOD, ["--set", "train.epochs=2.5"], "train.epochs=2.5 does not fit: expected an int"),
        (GOOD, ["--set", "data.batch_size=big"], "data.batch_size='big' does not fit"),
        (GOOD, ["--set", "train.device=cuda:7"], "train.device='cuda:7' (variant 'baseline')"),
        (GOOD.replace("seeds=2", "seeds=2, metric='val_accuracy'"), [],
         "metric='val_accuracy' is never logged by the built-in loop for ImageData "
         "(classification); did you mean 'val_acc'?"),
        (GOOD, ["--tune-trials", "3"],
         "tunes nothing (it has no tuning=). Fix: drop --tune-trials"),
        ("from ablate import Study\nstudy = Study('big', train=lambda config, run: None, "
         "factors={f'f{i}': [0, 1] for i in range(30)}, design='full_factorial', "
         "metric='score')\n", [],
         "design='full_factorial' over 30 factors makes 1,073,741,824 variants, more than 4,096"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_bad_inputs_exit_2_with_the_fix(tmp_path, capsys, source, args, message, command):
    args = list(args)  # shared between the parametrized commands: don't consume it
    path = write(tmp_path, source) if source is not None else Path(args.pop(0))
    assert main([command, str(path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith(f"ablate {command}: error: ")
    # (the autouse fixture checks that no MLflow store or checkpoint folder was created)


def test_usage_errors_exit_2(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    for argv in (["plan"], ["plan", str(path), "--seeds", "0"], ["run", str(path), "--executor",
                                                                 "slurm"], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "invalid choice: 'slurm'" in capsys.readouterr().err


def test_import_ablate_is_light():
    code = ("import sys, ablate; heavy = [m for m in ('torch', 'mlflow', 'ray', 'seaborn', "
            "'optuna', 'pandas', 'matplotlib') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_plans_the_quick_study():
    exe = Path(sys.executable).with_name("ablate")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ablate.cli"]
    out = subprocess.run([*cmd, "plan", str(ROOT / "studies" / "quick.py")], capture_output=True,
                         text=True, check=True)
    assert "8 variants x 10 seeds [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] = 80 trials" in out.stdout


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_the_command_exits_promptly_with_its_code_and_all_its_output(tmp_path, how):
    """`ablate` skips the interpreter's teardown (os._exit): its output through a pipe is
    still complete and its exit code kept, for a success (0) and a refused study (2)."""
    exe = Path(sys.executable).with_name("ablate")
    if how == "console script" and not exe.exists():
        pytest.skip("the console script is not installed in this environment")
    cmd = [str(exe)] if how == "console script" else [sys.executable, "-m", "ablate.cli"]
    good = subprocess.run([*cmd, "plan", str(ROOT / "studies" / "quick.py")],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert good.stdout.rstrip().endswith(
        "= 80 trials; metric val_acc (max)"), good.stdout[-300:]
    bad = write(tmp_path, GOOD.replace("seeds=2", "seeds=2, metrc='x'"))
    refused = subprocess.run([*cmd, "run", str(bad)], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "unexpected keyword argument 'metrc'; did you mean 'metric'?" in refused.stderr, \
        refused.stderr


def test_the_prompt_exit_still_runs_exit_handlers(tmp_path):
    """Only the interpreter's teardown is skipped: a study file's own exit handler (and with
    it logging's flush, multiprocessing's and Ray's clean-up) still runs, and the code is kept."""
    marker = tmp_path / "handler ran"
    study = write(tmp_path, GOOD.replace(
        "from ablate import Study",
        f"import atexit, pathlib\natexit.register(pathlib.Path({str(marker)!r}).write_text, "
        f"'yes')\nfrom ablate import Study"))
    done = subprocess.run([sys.executable, "-m", "ablate.cli", "plan", str(study)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "yes"


@pytest.mark.parametrize(
    "data,config,message",
    [
        ("text", '{"data.path": "no/such/corpus.txt"}',
         "the data for variant 'baseline' can't be loaded: text raised FileNotFoundError"),
        ("text", '{"data.path": "empty.txt"}', "can't be loaded: text raised ValueError"),
        ("cifar10", '{"data.root": "no-cifar", "data.download": False}',
         "cifar-10-batches-py"),
    ],
)
def test_missing_data_exits_2_before_anything_is_written(tmp_path, capsys, data, config,
                                                         message):
    (tmp_path / "empty.txt").write_text("")
    model = "CharRNN" if data == "text" else "ConvNet"
    factor = ('"model.cell": ["gru", "lstm"]' if data == "text"
              else '"model.residual": [True, False]')
    path = write(tmp_path, f"""
        from ablate import Study
        from ablate.data import {data}
        from ablate.models import {model}
        study = Study("d", model={model}, data={data}, config={config}, factors={{{factor}}})
    """)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_the_end_of_run_table_of_a_large_study_shows_the_baseline_and_the_extremes():
    """32 variants: the table lists the baseline, then the best and worst by mean (MAX_ROWS in
    all), and says how many it left out; a study of 4 variants lists all, in its order."""
    import io

    import pandas as pd
    from rich.console import Console

    from ablate.progress import MAX_ROWS, print_summary
    from ablate.study import Study
    from ablate.track import PlanRuns

    def fn(config, run):
        pass

    def table_of(study):
        return pd.DataFrame([{"variant": t.variant.id, "status": "finished", "seed": t.seed,
                              "final": float(sum(t.variant.levels.values())) + t.seed / 10}
                             for t in study.trials])

    def printed(study):
        out = io.StringIO()
        runs = PlanRuns("1", "parent", "p", {})
        print_summary(study, table_of(study), [], runs, "sqlite:///x.db",
                      console=Console(file=out, width=200))
        return out.getvalue()

    big = Study("big", train=fn, factors={f"f{i}": [0, 1] for i in range(5)},
                design="full_factorial", seeds=2, metric="m", mode="max")
    text = printed(big)
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert len(rows) == MAX_ROWS
    assert "baseline" in rows[0] and "f0=1,f1=1,f2=1,f3=1,f4=1" in rows[1]  # best: all ones
    assert "11 more variants" in text
    small = Study("small", train=fn, factors={"f0": [0, 1], "f1": [0, 1]},
                  design="full_factorial", seeds=2, metric="m", mode="max")
    rows = [line for line in printed(small).splitlines() if line.startswith("│")]
    assert [r.split("│")[2].strip() for r in rows] == [v.label for v in small.variants]


def test_the_end_of_run_table_of_a_study_with_tasks_names_each_rows_task():
    """Each task has its own baseline: its rows say which task they are (a study without tasks
    keeps its labels as they were)."""
    import io

    import pandas as pd
    from rich.console import Console

    from ablate.progress import print_summary
    from ablate.study import Study
    from ablate.track import PlanRuns

    def fn(config, run):
        pass

    study = Study("t", train=fn, factors={"f": [0, 1]}, seeds=2, metric="m", mode="max",
                  tasks={"one": {"x": 1}, "two": {"x": 2}})
    table = pd.DataFrame([{"variant": t.variant.id, "status": "finished", "seed": t.seed,
                           "final": 0.5} for t in study.trials])
    out = io.StringIO()
    print_summary(study, table, [], PlanRuns("1", "parent", "p", {}), "sqlite:///x.db",
                  console=Console(file=out, width=200))
    labels = [line.split("│")[2].strip() for line in out.getvalue().splitlines()
              if line.startswith("│")]
    assert labels == ["one: baseline", "one: f=1", "two: baseline", "two: f=1"]
