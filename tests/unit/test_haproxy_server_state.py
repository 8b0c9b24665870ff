"""What the rollout's HAProxy module reads from the runtime API, and which states it changes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(
    0, str(Path(__file__).resolve().parents[2] / "roles" / "haproxy_server_state" / "library")
)

from haproxy_server_state import (
    ADMF_CMAINT,
    ADMF_FDRAIN,
    ADMF_FMAINT,
    RuntimeApiError,
    needs_change,
    parse_servers_state,
    parse_sessions,
)

# `show servers state apptive_api` of HAProxy 2.6, trimmed to the columns the module reads
# plus two it does not (the header names every column of a row).
SERVERS_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight \
srv_iweight srv_time_since_last_change srv_check_status
3 apptive_api 1 apptive1-apptive-api-1 10.0.0.11 2 0 1 1 120 6
3 apptive_api 2 apptive1-apptive-api-2 10.0.0.11 0 1 1 1 4 4
3 apptive_api 3 apptive2-apptive-api-1 10.0.0.12 2 8 1 1 30 6
"""

SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax
apptive_api,apptive1-apptive-api-1,0,0,3,9
apptive_api,apptive1-apptive-api-2,0,0,,0
apptive_api,BACKEND,0,0,3,9
"""


def test_servers_state_rows_become_named_servers() -> None:
    servers = parse_servers_state(SERVERS_STATE.replace("\\\n", ""))
    assert servers["apptive1-apptive-api-1"] == {
        "id": 1,
        "admin": "ready",
        "admin_flags": 0,
        "operational": "up",
        "check": 6,
        "since": 120,
    }
    assert servers["apptive1-apptive-api-2"]["admin"] == "maint"
    assert servers["apptive1-apptive-api-2"]["operational"] == "down"
    assert servers["apptive2-apptive-api-1"]["admin"] == "drain"


def test_an_answer_without_a_header_is_an_error() -> None:
    with pytest.raises(RuntimeApiError, match="Can't find backend"):
        parse_servers_state("Can't find backend.\n")


def test_sessions_per_server_without_the_backend_row() -> None:
    assert parse_sessions(SHOW_STAT, "apptive_api") == {
        "apptive1-apptive-api-1": 3,
        "apptive1-apptive-api-2": 0,
    }


@pytest.mark.parametrize(
    ("flags", "state", "expected"),
    [
        (0, "drain", True),
        (ADMF_FDRAIN, "drain", False),
        # A server in maint stays there: drain would let its sticky users back in.
        (ADMF_FMAINT, "drain", False),
        (ADMF_FDRAIN, "maint", True),
        (ADMF_FMAINT, "maint", False),
        (ADMF_FMAINT | ADMF_FDRAIN, "ready", True),
        (0, "ready", False),
        # Disabled in the configuration: not the runtime API's to change.
        (ADMF_CMAINT, "ready", False),
    ],
)
def test_only_servers_in_another_state_change(flags: int, state: str, expected: bool) -> None:
    assert needs_change({"admin_flags": flags}, state) is expected
