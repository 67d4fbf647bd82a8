"""The training pieces: schedules, optimisers, the Run handle, the LM task through the runner."""

from __future__ import annotations

import io
import math
import textwrap

import pytest
import torch
from mlflow.tracking import MlflowClient

from ablate.cli import main
from ablate.config import TRAIN_DEFAULTS
from ablate.models import ConvNet
from ablate.train.optim import layer_groups, lr_factor, make_optimizer, make_scheduler
from ablate.train.run import Diverged, Run


def cfg(**kw):
    return {**TRAIN_DEFAULTS, **{f"train.{k}": v for k, v in kw.items()}}


def test_sgdr_restarts_and_cycle_mult():
    c = cfg(schedule="sgdr", cycle_len=1, cycle_mult=2)
    assert lr_factor(c, 0.0) == 1.0
    assert lr_factor(c, 0.5) == pytest.approx(0.5)
    assert lr_factor(c, 0.999) < 1e-4
    assert lr_factor(c, 1.0) == 1.0  # restart after the first cycle (1 epoch)
    assert lr_factor(c, 2.0) == pytest.approx(0.5)  # middle of the second cycle (2 epochs)
    assert lr_factor(c, 3.0) == 1.0  # restart after 1 + 2 epochs


def test_onecycle_and_warmup():
    c = cfg(schedule="onecycle", epochs=10)
    values = [lr_factor(c, t / 10) for t in range(100)]
    peak = max(range(100), key=values.__getitem__)
    assert values[0] == pytest.approx(1 / 25) and 29 <= peak <= 31 and values[-1] < 0.01
    w = cfg(warmup_epochs=2)
    assert lr_factor(w, 0.0) == 0.0 and lr_factor(w, 1.0) == 0.5 and lr_factor(w, 3.0) == 1.0
    with pytest.raises(ValueError, match="train.schedule='cosine' is unknown"):
        lr_factor(cfg(schedule="cosine"), 0)


def test_scheduler_steps_per_batch_and_resumes():
    model = torch.nn.Linear(2, 2)
    c = cfg(schedule="sgdr", lr=0.1)
    opt = make_optimizer(model, c)
    sched = make_scheduler(opt, c, steps_per_epoch=4)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5)
    opt2 = make_optimizer(model, c)
    sched2 = make_scheduler(opt2, c, steps_per_epoch=4)
    sched2.load_state_dict(sched.state_dict())
    opt.step()
    sched.step()
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def _lr_run(c, steps, resume_at=None, legacy=False, spe=5):
    """The lrs (of both groups) after each of ``steps`` steps; saved and resumed (through
    torch.save and weights_only loading) after ``resume_at`` steps, as the loop does; ``legacy``:
    the first part runs the LambdaLR over lr_factor that earlier versions checkpointed."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    opt = make_optimizer(model, c)
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(c, s / spe)) if legacy
             else make_scheduler(opt, c, steps_per_epoch=spe))
    lrs = [g["lr"] for g in opt.param_groups]
    for step in range(steps):
        if step == resume_at:
            buf = io.BytesIO()
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
            buf.seek(0)
            state = torch.load(buf, weights_only=True)
            opt = make_optimizer(model, c)
            sched = make_scheduler(opt, c, steps_per_epoch=spe)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        opt.step()
        sched.step()
        lrs += [g["lr"] for g in opt.param_groups]
    return lrs


@pytest.mark.parametrize("schedule,warmup", [("constant", 0.0), ("constant", 1.5), ("sgdr", 0.0),
                                             ("sgdr", 0.5), ("onecycle", 0.0),
                                             ("onecycle", 2.0)])
def test_torch_schedulers_follow_lr_factor_and_resume_exactly(schedule, warmup):
    c = cfg(schedule=schedule, warmup_epochs=warmup, epochs=3, lr=0.1, layer_lrs=(0.5, 1.0))
    steps = 3 * 5 + 4  # 4 past the planned end: one-cycle holds its final rate
    lrs = _lr_run(c, steps)
    expected = [m * lr_factor(c, s / 5) for s in range(steps + 1) for m in (0.05, 0.1)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    for at in (1, 7, 15):
        assert _lr_run(c, steps, resume_at=at) == lrs  # bit for bit
    assert _lr_run(c, steps, resume_at=7, legacy=True) == pytest.approx(lrs, rel=1e-12, abs=1e-15)


def test_discriminative_learning_rates():
    model = ConvNet(widths=(4, 8, 16))
    c = cfg(layer_lrs=(0.01, 0.1, 1.0), lr=0.2)
    opt = make_optimizer(model, c)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.002, 0.02, 0.2])
    grouped = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert grouped == sum(p.numel() for p in model.parameters())
    first = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(model.features.stem.weight) in first  # input side gets the smallest rate
    assert id(model.classifier.weight) in {id(p) for p in opt.param_groups[-1]["params"]}
    with pytest.raises(ValueError, match="layers with parameters"):
        layer_groups(model, 999)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                      ("adamw", torch.optim.AdamW)])
def test_optimizers(name, cls):
    assert isinstance(make_optimizer(torch.nn.Linear(2, 2), cfg(optimizer=name)), cls)


def make_run(tmp_path, sink, logged_through=-1, metric="acc"):
    return Run(config={}, seed=0, device=torch.device("cpu"), checkpoint_dir=tmp_path / "ck",
               metric=metric, mode="max", sink=sink, logged_through=logged_through)


def test_run_log_batches_dedupes_and_guards(tmp_path):
    calls = []
    run = make_run(tmp_path, lambda m, s: calls.append((s, m)), logged_through=0)
    run.log({"loss": torch.tensor(0.5), "acc": 0.1}, step=0)  # already logged before a resume
    run.log({"loss": 0.4, "acc": 0.3}, step=1)
    assert run.final_summary() == {"final_acc": 0.3, "best_acc": 0.3}  # sends step 1
    assert calls == [(1, {"loss": pytest.approx(0.4), "acc": 0.3})]
    with pytest.raises(Diverged, match="loss = nan at step 2"):
        run.log({"loss": float("nan"), "acc": 0.2}, step=2)
    assert calls[-1][0] == 2 and math.isnan(calls[-1][1]["loss"])  # logged, then stopped
    other = make_run(tmp_path, lambda m, s: None)
    other.log({"grad_norm": float("inf"), "acc": 0.5}, step=0)  # not a loss: no divergence


def test_several_log_calls_per_step_are_merged_into_one_record(tmp_path):
    calls = []
    run = make_run(tmp_path, lambda m, s: calls.append((s, dict(m))), logged_through=0)
    run.log({"loss": 0.9}, step=0)  # step 0 was logged before a resume: skipped, merged or not
    run.log({"acc": 0.1}, step=0)
    run.log({"loss": 0.5}, step=1)
    run.log({"acc": 0.2}, step=1)
    run.log({"acc": 0.3}, step=1)  # the same key again in one step: the last value counts
    run.save_checkpoint({"epoch": 2})  # what a checkpoint resumes after is in the store
    assert calls == [(1, {"loss": 0.5, "acc": 0.3})]
    run.log({"loss": 0.25}, step=2)
    run.log({"acc": 0.4}, step=2)
    assert run.final_summary() == {"final_acc": 0.4, "best_acc": 0.4}
    assert calls[-1] == (2, {"loss": 0.25, "acc": 0.4}) and len(calls) == 2
    assert run.metric_history == [0.1, 0.3, 0.4]  # one value per step


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    run = make_run(tmp_path, lambda m, s: None)
    run.save_checkpoint({"epoch": 1, "w": torch.ones(3)})

    def broken_save(obj, f, *a, **kw):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        run.save_checkpoint({"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert not list((tmp_path / "ck").glob(".checkpoint-*"))  # temp file cleaned up
    state = make_run(tmp_path, lambda m, s: None).load_checkpoint()
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))  # previous intact


def test_checkpoint_restores_rng_state(tmp_path):
    run = make_run(tmp_path, lambda m, s: None)
    torch.manual_seed(3)
    run.save_checkpoint({"epoch": 1})
    expected = torch.rand(4)
    torch.manual_seed(99)
    make_run(tmp_path, lambda m, s: None).load_checkpoint()
    assert torch.equal(torch.rand(4), expected)


def test_language_model_study_through_the_runner(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    study = tmp_path / "lm.py"
    study.write_text(textwrap.dedent(f"""
        from ablate import Study
        from ablate.data import text
        from ablate.models import CharRNN

        study = Study("lm", model=CharRNN, data=text,
                      config={{"data.path": {str(corpus)!r}, "data.batch_size": 8,
                               "data.bptt": 16, "model.n_hidden": 16, "model.n_layers": 1,
                               "model.n_fac": 8, "train.epochs": 2, "train.optimizer": "adam",
                               "train.lr": 0.01, "train.schedule": "sgdr"}},
                      factors={{"model.cell": ["gru", "lstm"]}}, seeds=1, metric="val_bpc")
    """))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(study), "--tracking-uri", uri, "--checkpoint-dir",
                 str(tmp_path / "ck")]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("lm")
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("ablate.role") == "trial"]
    assert {r.data.tags["ablate.label"] for r in runs} == {"baseline", "cell=lstm"}
    for r in runs:
        m = r.data.metrics
        assert m["val_bpc"] == pytest.approx(m["val_loss"] / math.log(2))
        assert m["val_ppl"] == pytest.approx(math.exp(m["val_loss"]), rel=1e-5)
        assert m["best_val_bpc"] <= m["final_val_bpc"]
        assert m["val_bpc"] < math.log2(27)  # learned something beyond uniform over the vocab
        assert "train_acc" not in m


def test_compile_is_opt_in_and_reports_its_time(tmp_path):
    from ablate.source import load_study

    study = tmp_path / "c.py"
    study.write_text(textwrap.dedent("""
        from ablate import Study
        from ablate.data import digits
        from ablate.models import ConvNet
        study = Study("compiled", model=ConvNet, data=digits,
                      config={"model.widths": (4, 8), "data.image_size": 8, "train.epochs": 1},
                      factors={"model.batch_norm": [True, False]}, seeds=1)
    """))
    plain = load_study(study)
    assert "train.compile" not in plain.variants[0].config  # absent: ids don't change
    compiled = load_study(study, overrides={"train.compile": "aot_eager"})
    assert plain.variants[0].id != compiled.variants[0].id
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["run", str(study), "--tracking-uri", uri, "--set", "train.compile=aot_eager",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("compiled")
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("ablate.role") == "trial"]
    assert len(runs) == 2
    for r in runs:
        assert r.data.params["train.compile"] == "aot_eager"
        assert r.data.tags["ablate.status"] == "finished"
        assert 0 < r.data.metrics["compile_seconds"] < r.data.metrics["train_seconds"]
