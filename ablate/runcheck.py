"""What `ablate run` checks against the store around training: the plan's current round, finished
trials trained with other code, a store lost mid-study, and the dry run."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from ablate.plan_view import print_plan
from ablate.study import Study


class UsageError(Exception):
    """Bad command-line input or environment, reported with exit code 2."""


def current(study: Study, tracker: Any) -> Study:
    """An adaptive study as far as its recorded trials have scheduled it; any other as it is."""
    if not study.adaptive:
        return study
    from ablate.execute import next_round

    return next_round(study, tracker)


def changed_code(study: Study, tracker: Any, args: argparse.Namespace) -> None:
    """Finished trials trained with other code are reused or retrained only when asked."""
    from ablate.execute import changed_trials

    exp_id = tracker.experiment_id(study)
    if exp_id is None:
        return
    changed = changed_trials(study, tracker.trial_records(exp_id))
    if not changed or args.keep_changed:
        return
    if args.rerun_changed:
        if not args.dry_run:
            tracker.replace_trials(changed)
        print(f"{len(changed)} finished trial(s) were trained with other code: training them "
              f"again (the old runs are kept, tagged ablate.replaced=true).", flush=True)
        return
    raise UsageError(
        f"{len(changed)} of the plan's {len(study.trials)} trials finished with other code "
        f"(code fingerprint {changed[0].code or 'unrecorded'}, now {study.fingerprint}: the study "
        f"file or the source of its model, data or train function changed since). Fix: pass "
        f"--rerun-changed to train them again with the current code (the old runs are kept), "
        f"or --keep-changed to reuse their results. Nothing was trained."
    )


class StoreLost(Exception):
    """The tracking store failed mid-study (exit 1: a trial could not be recorded)."""


@contextlib.contextmanager
def store_lost(uri: str) -> Iterator[None]:
    """A tracking store that fails mid-study (a server gone, a database file deleted) ends the
    study with one clear message, whichever call noticed it first."""
    from ablate.track import TrackingError

    try:
        yield
    except TrackingError as exc:
        raise StoreLost(str(exc)) from None
    except Exception as exc:
        if not type(exc).__module__.startswith(_STORE_ERRORS):
            raise
        from ablate.track import describe_failure

        raise StoreLost(
            f"the tracking store {uri} failed mid-study ({describe_failure(exc)}). What "
            f"was logged before is kept, and so are the checkpoints: run `ablate run` again when "
            f"the store is back, and interrupted trials resume in their MLflow runs."
        ) from None


_STORE_ERRORS = ("mlflow", "sqlalchemy", "sqlite3", "requests", "urllib3", "psycopg2")


def dry_run(study: Study, tracker: Any) -> int:
    from ablate.status import is_done

    print_plan(study)
    study = current(study, tracker)
    exp_id = tracker.experiment_id(study)
    done = tracker.trial_records(exp_id) if exp_id is not None else {}
    pending = [t for t in study.trials if not is_done(done.get((t.variant.id, t.seed)))]
    print(f"dry run: {len(study.trials) - len(pending)} trials done, {len(pending)} would run "
          f"(tracking store {tracker.uri}); nothing was trained.")
    for t in pending:
        record = done.get((t.variant.id, t.seed))
        state = f"{record.status}, resumes" if record else "new"
        print(f"  {t.variant.label} seed {t.seed} ({t.key}): {state}")
    return 0
