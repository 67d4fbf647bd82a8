"""What `ablate run` checks against the store around training: the plan's current round, finished
trials trained with other code or on other data (asked once, the answer remembered), variants
whose ids changed with a shared setting, a store lost mid-study, and the dry run."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ablate.plan_view import print_plan
from ablate.status import is_done
from ablate.study import Study, Trial


class UsageError(Exception):
    """Bad command-line input or environment, reported with exit code 2."""


def current(study: Study, tracker: Any) -> Study:
    """An adaptive study as far as its recorded trials have scheduled it; any other as it is."""
    if not study.adaptive:
        return study
    from ablate.execute import next_round

    return next_round(study, tracker)


@dataclass(frozen=True)
class Changed:
    """A finished or diverged trial of the plan trained with other code or on other data."""

    trial: Trial
    record: Any  # its ablate.track.TrialRecord
    code: bool  # trained with another code fingerprint than the current
    data: bool  # trained on data with another fingerprint than its variant's data now
    now: str  # "<code>/<data>" now: what --keep-changed records as ablate.kept

    @property
    def kept(self) -> bool:
        """``--keep-changed`` accepted it for the code and data of now."""
        return bool(self.record.kept) and self.record.kept == self.now


def changed_trials(study: Study, records: Mapping[tuple[str, int], Any],
                   data: Mapping[str, str] | None = None) -> list[Changed]:
    """The plan's finished or diverged trials whose recorded code fingerprint (``ablate.code``)
    differs from the study's, or whose data fingerprint (``ablate.data``) differs from its
    variant's now (``data``: variant id -> fingerprint, from
    :func:`ablate.train.build.check_data`; none: data not checked), kept ones included.

    A trial that recorded no data fingerprint (trained before ablate recorded one) counts as
    unchanged data. Data that depends on the seed (a data function drawing from the global
    RNG, which each trial seeds with its own seed) is not a change: a variant whose trial of the
    plan's first seed, the one ``check_data`` loads its data as, recorded the data of now has
    none changed. A study that tunes ``data.*`` settings trains each variant on the data its
    search chose, not on the data ``check_data`` loads: its data is not checked.
    """
    tuned_data = any(k.startswith("data.") for k in study.tuning.space)
    data = {} if tuned_data else (data or {})
    first = study.seeds[0] if study.seeds else 0
    out = []
    for trial in study.trials:
        record = records.get((trial.variant.id, trial.seed))
        if record is None or not is_done(record):
            continue
        now_data = data.get(trial.variant.id, "")
        first_record = records.get((trial.variant.id, first))
        same_data = (not now_data or not record.data or record.data == now_data
                     or (first_record is not None and is_done(first_record)
                         and first_record.data == now_data))
        other_code = record.code != study.fingerprint
        if other_code or not same_data:
            out.append(Changed(trial, record, other_code, not same_data,
                               f"{study.fingerprint}/{now_data}"))
    return out


def changed_code(study: Study, tracker: Any, args: argparse.Namespace,
                 data: Mapping[str, str] | None = None) -> None:
    """Finished trials trained with other code or on other data (``data``: variant id -> its
    data fingerprint now, from :func:`ablate.train.build.check_data`) are reused or retrained
    only when asked, and asked once: ``--keep-changed`` tags the runs it accepts
    ``ablate.kept=<code>/<data>`` (the fingerprints of now), so a later plain run reuses them
    without asking until the code or the data changes again. ``--rerun-changed`` retrains
    every trial of other code or data, kept ones too; the old runs are kept, tagged
    ``ablate.replaced=true``. Raises :class:`UsageError` (exit 2) naming what changed and the
    fix when neither was passed."""
    exp_id = tracker.experiment_id(study)
    if exp_id is None:
        return
    found = changed_trials(study, tracker.trial_records(exp_id), data)
    if args.rerun_changed:
        if found:
            if not args.dry_run:
                tracker.replace_trials([c.record for c in found])
            print(f"{len(found)} finished trial(s) were trained with {_what(found)}: "
                  f"training them again (the old runs are kept, tagged "
                  f"ablate.replaced=true).", flush=True)
        return
    asked = [c for c in found if not c.kept]
    if not asked:
        return
    if args.keep_changed:
        if not args.dry_run:
            for c in asked:
                tracker.set_tags(c.record.run_id, {"ablate.kept": c.now})
        print(f"{len(asked)} finished trial(s) were trained with {_what(asked)}: reusing "
              f"them (--keep-changed; recorded on their runs as ablate.kept, so later runs "
              f"don't ask again unless the code or data changes again, and the report says "
              f"which trials came from older code or other data).", flush=True)
        return
    raise UsageError(
        f"{len(asked)} of the plan's {len(study.trials)} trials finished with {_what(asked)} "
        f"({'; '.join(_reasons(study, asked))}). Fix: pass --rerun-changed to "
        f"train them again with the current code and data (the old runs are kept), or "
        f"--keep-changed to reuse their results (remembered: later runs don't ask again, and "
        f"the report says which trials came from older code or other data). Nothing was "
        f"trained."
    )


def _what(found: list[Changed]) -> str:
    code, data = any(c.code for c in found), any(c.data for c in found)
    return "other code and data" if code and data else "other data" if data else "other code"


def _reasons(study: Study, found: list[Changed]) -> list[str]:
    """What changed, in a few words each: the code, and each data config whose data did."""
    from ablate.config import factory_kwargs

    reasons = []
    code = [c for c in found if c.code]
    if code:
        before = sorted({c.record.code or "unrecorded" for c in code})
        reasons.append(
            f"code: {len(code)} trial(s) trained with code fingerprint {', '.join(before[:3])}"
            f"{', ...' if len(before) > 3 else ''}, now {study.fingerprint}: the model, data "
            f"or train function, or code they use, changed since")
    by_config: dict[str, list[Changed]] = {}
    for c in found:
        if c.data:
            kwargs = factory_kwargs(c.trial.variant.config, "data")
            by_config.setdefault(_call(study.data_for(c.trial.variant.config), kwargs),
                                 []).append(c)
    for call, trials in by_config.items():
        before = sorted({c.record.data for c in trials})
        now = trials[0].now.split("/", 1)[1]
        reasons.append(
            f"data: {len(trials)} trial(s) trained on {call} with data fingerprint "
            f"{', '.join(before[:3])}{', ...' if len(before) > 3 else ''}, now {now}: the "
            f"files or what the data function returns changed since")
    return reasons


def _call(fn: Any, kwargs: Mapping[str, Any], limit: int = 160) -> str:
    """``name(key=value, ...)`` of a data config, where-it-reads-from keys first."""
    first = ("path", "name", "root")
    keys = [k for k in first if k in kwargs] + [k for k in kwargs if k not in first]
    args = ", ".join(f"{k}={kwargs[k]!r}" for k in keys if kwargs[k] is not None)
    text = f"{getattr(fn, '__name__', 'data')}({args})"
    return text if len(text) <= limit else text[:limit - 4] + "...)"


def new_ids_note(study: Study, tracker: Any) -> str | None:
    """A line for ``ablate run`` when the store has trial runs of this study but none of the
    plan's variants, because settings every variant shares changed (e.g. a default of the
    study's own model function): which keys changed from what to what, and that the old runs
    are kept. None when any variant of the plan has runs, or the store has none of the study.
    """
    stored = tracker.stored_configs(study)
    if not stored or {v.id for v in study.variants} & set(stored):
        return None
    from ablate.track.params import param

    changes: dict[str, set[tuple[str, str]]] = {}
    variants: dict[str, int] = {}  # key -> how many variants it changed in
    renewed = 0
    for variant in study.variants:
        mine = {k: param(v) for k, v in variant.config.items()}
        diffs = [_config_diff(theirs, mine) for _, theirs in sorted(stored.items())]
        diff = min(diffs, key=len)
        if not diff:
            continue
        renewed += 1
        for key, before, after in diff:
            changes.setdefault(key, set()).add((before, after))
            variants[key] = variants.get(key, 0) + 1
    if not renewed:
        return None
    keys = sorted(changes, key=lambda k: (-variants[k], k))
    shown = []
    for key in keys[:3]:
        pairs = sorted(changes[key])
        if len(pairs) == 1:
            shown.append(f"{key} changed {_shown(pairs[0][0])} → {_shown(pairs[0][1])}")
        else:
            shown.append(f"{key} changed ({len(pairs)} ways)")
    more = f" and {len(keys) - 3} more setting(s)" if len(keys) > 3 else ""
    return (f"{renewed} variant{'s' * (renewed != 1)} "
            f"{'have' if renewed != 1 else 'has'} new ids because {', '.join(shown)}{more}; "
            f"the old runs are kept (never compared with this plan's) and these variants train "
            f"from scratch.")


def _config_diff(before: Mapping[str, str],
                 after: Mapping[str, str]) -> list[tuple[str, str, str]]:
    unset = "(unset)"
    return [(k, before.get(k, unset), after.get(k, unset))
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]


def _shown(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit - 3] + "..."


class Stopped(Exception):
    """The study stopped before its end because every trial failed alike (exit 1)."""


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
