"""The exit codes of the ``ablate`` command (a contract, see README): what ``ablate run``,
``plan``, ``report`` and ``ui`` return."""

from __future__ import annotations

EXIT_OK = 0  # every trial finished or diverged
EXIT_FAILED = 1  # some trial failed, or the store was lost mid-study
EXIT_INVALID = 2  # invalid study, usage or environment: nothing was written
EXIT_INTERRUPTED = 130  # interrupted (Ctrl-C)
