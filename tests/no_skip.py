"""A tier that cannot run must not pass: a pytest plugin that turns every skip into a failure
under ``CI=true`` or when the tier was asked for by name (``make test-slurm`` and the other
tier targets set ``HVDBENCH_NO_SKIP=1``).

Without it, a missing ``slurmd`` or a non-root user skips the Slurm tier, pytest exits 0 and
CI is green without the tier having run. tests/conftest.py takes its hooks (any pytest run
of tests/), and the Makefile's tiers load it with ``-p tests.no_skip`` as well. An ``xfail``
is not a skip and is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

WHY = "a skip is a failure here (CI=true, or the tier was asked for by name)"


def skips_fail(env: Mapping[str, str] = os.environ) -> bool:
    """True when a skipped test must count as failed."""
    return env.get("CI", "").strip().lower() in ("true", "1", "yes") or (
        env.get("HVDBENCH_NO_SKIP", "").strip() == "1"
    )


def _reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail(report: pytest.TestReport | pytest.CollectReport) -> None:
    report.outcome = "failed"
    report.longrepr = f"{WHY}: {_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and skips_fail():
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and skips_fail():
        _fail(report)
