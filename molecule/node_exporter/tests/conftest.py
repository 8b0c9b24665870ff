"""A failing test explains itself: it carries the exporter's journal."""

import pytest

JOURNAL_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    host = getattr(item, "funcargs", {}).get("host")
    if report.when != "call" or not report.failed or host is None:
        return
    try:
        result = host.run(f"journalctl -u prometheus-node-exporter --no-pager -n {JOURNAL_LINES}")
        journal = result.stdout or result.stderr
    except Exception as error:  # the report must not hide the test failure
        journal = f"unavailable: {error}"
    report.sections.append((f"journal of prometheus-node-exporter on {host}", journal))
