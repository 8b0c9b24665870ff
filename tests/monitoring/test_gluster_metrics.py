"""The Gluster textfile collector (roles/gluster_metrics/files/gluster_metrics.py).

The XML under fixtures/gluster/ was captured from GlusterFS 10.3 (Debian 12) with
`gluster --xml ...`: a replica 3 volume `apptive`, then one brick killed, files written
(pending heals), a second peer added with a brick and stopped, the volume stopped, and glusterd
stopped. Host names were changed to apptive1/apptive2.
"""

from __future__ import annotations

import os
import stat
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "gluster"
BRICKS = ("apptive1:/bricks/b1", "apptive1:/bricks/b2", "apptive1:/bricks/b3")


def xml(name: str) -> str:
    return (FIXTURES / f"{name}.xml").read_text(encoding="utf-8")


class FakeGluster:
    """Answers gluster's subcommands from fixture files; records what was asked."""

    def __init__(self, collector: ModuleType, answers: dict[tuple[str, ...], str]) -> None:
        self.collector = collector
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, args: Sequence[str]) -> str:
        self.calls.append(tuple(args))
        answer = self.answers.get(tuple(args))
        if answer is None:
            raise AssertionError(f"unexpected gluster call: {args}")
        if not answer.lstrip().startswith("<"):
            raise self.collector.GlusterError(answer.strip())
        return answer


def samples(text: str) -> dict[str, float]:
    """`{'name{labels}': value}` from Prometheus text format."""
    result = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            result[name] = float(value)
    return result


def run_collect(collector: ModuleType, answers: dict[tuple[str, ...], str], **kwargs) -> str:
    fake = FakeGluster(collector, answers)
    return collector.render(collector.collect(fake, **kwargs))


def answers_for(peers: str, info: str, status: str, heal: str) -> dict[tuple[str, ...], str]:
    return {
        ("peer", "status"): xml(peers),
        ("volume", "info"): xml(info),
        ("volume", "status", "apptive"): xml(status),
        ("volume", "heal", "apptive", "info", "summary"): xml(heal),
    }


# --- parsing ------------------------------------------------------------------------------


def test_peer_status_connected_and_not(collector: ModuleType) -> None:
    assert collector.parse_peer_status(xml("peer-status-peer-down")) == [
        collector.Peer("apptive2", connected=False)
    ]
    assert collector.parse_peer_status(xml("peer-status-disconnected")) == [
        collector.Peer("apptive2", connected=False)
    ]


def test_peer_status_of_a_lone_host_is_empty(collector: ModuleType) -> None:
    assert collector.parse_peer_status(xml("peer-status-alone")) == []


def test_volume_info(collector: ModuleType) -> None:
    (volume,) = collector.parse_volume_info(xml("volume-info-started"))
    assert volume == collector.Volume("apptive", started=True, bricks=BRICKS, heals=True)
    (stopped,) = collector.parse_volume_info(xml("volume-info-stopped"))
    assert not stopped.started
    (grown,) = collector.parse_volume_info(xml("volume-info-peer-down"))
    assert grown.bricks == (*BRICKS, "apptive2:/bricks/b4")


def test_volume_info_distribute_only_does_not_heal(collector: ModuleType) -> None:
    text = xml("volume-info-started").replace(
        "<replicaCount>3</replicaCount>", "<replicaCount>1</replicaCount>"
    )
    (volume,) = collector.parse_volume_info(text)
    assert not volume.heals


def test_volume_status_lists_bricks_not_daemons(collector: ModuleType) -> None:
    assert collector.parse_volume_status(xml("status-healthy")) == dict.fromkeys(BRICKS, True)


def test_volume_status_brick_down(collector: ModuleType) -> None:
    online = collector.parse_volume_status(xml("status-brick-down"))
    assert online == {BRICKS[0]: True, BRICKS[1]: False, BRICKS[2]: True}


def test_volume_status_leaves_out_bricks_of_an_unreachable_peer(collector: ModuleType) -> None:
    online = collector.parse_volume_status(xml("status-peer-down"))
    assert "apptive2:/bricks/b4" not in online
    assert set(online) == set(BRICKS)


def test_heal_summary(collector: ModuleType) -> None:
    healthy = collector.parse_heal_info(xml("heal-summary-healthy"))
    assert [(b.brick, b.connected, b.entries, b.split_brain) for b in healthy] == [
        (brick, True, 0, 0) for brick in BRICKS
    ]
    pending = collector.parse_heal_info(xml("heal-summary-pending"))
    assert [(b.connected, b.entries) for b in pending] == [(True, 8), (False, None), (True, 8)]


def test_heal_info_without_summary(collector: ModuleType) -> None:
    pending = collector.parse_heal_info(xml("heal-info-pending"))
    assert [(b.brick, b.connected, b.entries, b.split_brain) for b in pending] == [
        (BRICKS[0], True, 8, None),
        (BRICKS[1], False, None, None),
        (BRICKS[2], True, 8, None),
    ]


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("heal-summary-nosuch", "Volume nosuch does not exist"),
        ("status-nosuch", "Volume nosuch does not exist"),
        ("status-stopped", "Volume apptive is not started"),
        ("heal-summary-stopped", "Not able to fetch volfile"),
        ("peer-status-glusterd-down", "Connection failed"),
    ],
)
def test_errors_become_gluster_errors(collector: ModuleType, fixture: str, message: str) -> None:
    parsers = (collector.parse_heal_info, collector.parse_volume_status)
    for parse in parsers:
        with pytest.raises(collector.GlusterError, match=message):
            parse(xml(fixture))


# --- collecting ---------------------------------------------------------------------------


def test_collect_healthy(collector: ModuleType) -> None:
    answers = answers_for(
        "peer-status-disconnected", "volume-info-started", "status-healthy", "heal-summary-healthy"
    )
    found = samples(run_collect(collector, answers))
    assert found["gluster_up"] == 1
    assert found["gluster_peers"] == 1
    assert found["gluster_peers_connected"] == 0
    assert found['gluster_peer_connected{peer="apptive2"}'] == 0
    assert found['gluster_volume_started{volume="apptive"}'] == 1
    assert found['gluster_volume_bricks{volume="apptive"}'] == 3
    assert found['gluster_volume_bricks_online{volume="apptive"}'] == 3
    for brick in BRICKS:
        assert found[f'gluster_brick_online{{brick="{brick}",volume="apptive"}}'] == 1
        assert found[f'gluster_brick_heal_entries{{brick="{brick}",volume="apptive"}}'] == 0
    assert found['gluster_volume_heal_entries{volume="apptive"}'] == 0
    assert found['gluster_volume_split_brain_entries{volume="apptive"}'] == 0
    assert found['gluster_volume_heal_info_success{volume="apptive"}'] == 1
    assert found['gluster_volume_status_success{volume="apptive"}'] == 1


def test_collect_brick_down_with_pending_heals(collector: ModuleType) -> None:
    answers = answers_for(
        "peer-status-disconnected",
        "volume-info-started",
        "status-brick-down",
        "heal-summary-pending",
    )
    found = samples(run_collect(collector, answers))
    assert found['gluster_brick_online{brick="apptive1:/bricks/b2",volume="apptive"}'] == 0
    assert found['gluster_volume_bricks_online{volume="apptive"}'] == 2
    assert found['gluster_volume_heal_entries{volume="apptive"}'] == 8
    # The unreachable brick has no count rather than a made-up zero.
    assert 'gluster_brick_heal_entries{brick="apptive1:/bricks/b2",volume="apptive"}' not in found


def test_collect_counts_bricks_of_a_lost_peer_as_offline(collector: ModuleType) -> None:
    answers = answers_for(
        "peer-status-peer-down",
        "volume-info-peer-down",
        "status-peer-down",
        "heal-summary-peer-down",
    )
    found = samples(run_collect(collector, answers))
    assert found['gluster_volume_bricks{volume="apptive"}'] == 4
    assert found['gluster_volume_bricks_online{volume="apptive"}'] == 3
    assert found['gluster_brick_online{brick="apptive2:/bricks/b4",volume="apptive"}'] == 0
    assert found['gluster_volume_heal_entries{volume="apptive"}'] == 7


def test_collect_stopped_volume_asks_neither_status_nor_heal(collector: ModuleType) -> None:
    fake = FakeGluster(
        collector,
        {
            ("peer", "status"): xml("peer-status-disconnected"),
            ("volume", "info"): xml("volume-info-stopped"),
        },
    )
    found = samples(collector.render(collector.collect(fake)))
    assert fake.calls == [("peer", "status"), ("volume", "info")]
    assert found['gluster_volume_started{volume="apptive"}'] == 0
    assert found['gluster_volume_bricks_online{volume="apptive"}'] == 0
    assert found['gluster_brick_online{brick="apptive1:/bricks/b1",volume="apptive"}'] == 0


def test_collect_glusterd_down(collector: ModuleType) -> None:
    answers = {("peer", "status"): xml("peer-status-glusterd-down")}
    text = run_collect(collector, answers, volumes=["apptive"])
    # Unknown is not stopped: no volume series at all, only gluster_up 0.
    assert samples(text) == {"gluster_up": 0}


def test_collect_failing_status_and_heal(collector: ModuleType) -> None:
    answers = answers_for(
        "peer-status-disconnected", "volume-info-started", "status-nosuch", "heal-summary-nosuch"
    )
    found = samples(run_collect(collector, answers))
    assert found['gluster_volume_status_success{volume="apptive"}'] == 0
    assert found['gluster_volume_heal_info_success{volume="apptive"}'] == 0
    assert found['gluster_volume_bricks_online{volume="apptive"}'] == 0
    assert 'gluster_volume_heal_entries{volume="apptive"}' not in found


def test_collect_only_the_volumes_asked_for(collector: ModuleType) -> None:
    answers = answers_for(
        "peer-status-disconnected", "volume-info-started", "status-healthy", "heal-summary-healthy"
    )
    found = samples(run_collect(collector, answers, volumes=["missing"]))
    assert found['gluster_volume_started{volume="missing"}'] == 0
    assert found['gluster_volume_bricks{volume="missing"}'] == 0
    assert not any('volume="apptive"' in name for name in found)


def test_collect_without_heal(collector: ModuleType) -> None:
    answers = answers_for(
        "peer-status-disconnected", "volume-info-started", "status-healthy", "heal-summary-healthy"
    )
    fake = FakeGluster(collector, answers)
    collector.collect(fake, heal=False)
    assert not any(call[:2] == ("volume", "heal") for call in fake.calls)


# --- writing ------------------------------------------------------------------------------


def test_render_escapes_label_values(collector: ModuleType) -> None:
    family = collector.Family("gluster_test", "A test.")
    family.add(1.5, brick='a"b\\c\nd')
    assert collector.render([family]) == (
        "# HELP gluster_test A test.\n"
        "# TYPE gluster_test gauge\n"
        'gluster_test{brick="a\\"b\\\\c\\nd"} 1.5\n'
    )


def test_render_passes_promtool_check_metrics(collector: ModuleType, promtool: str) -> None:
    answers = answers_for(
        "peer-status-peer-down",
        "volume-info-peer-down",
        "status-peer-down",
        "heal-summary-peer-down",
    )
    text = run_collect(collector, answers)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_write_atomically(collector: ModuleType, tmp_path: Path) -> None:
    target = tmp_path / "gluster.prom"
    target.write_text("old\n")
    collector.write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["gluster.prom"]


def test_write_atomically_leaves_nothing_behind_on_failure(
    collector: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(collector.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        collector.write_atomically(tmp_path / "gluster.prom", "new\n")
    assert os.listdir(tmp_path) == []


def fake_gluster_binary(tmp_path: Path) -> Path:
    """A `gluster` that answers like the real one: XML on stdout, sometimes exit status 1."""
    script = tmp_path / "gluster"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            case "$*" in
              "--xml peer status") cat {FIXTURES}/peer-status-disconnected.xml ;;
              "--xml volume info") cat {FIXTURES}/volume-info-started.xml ;;
              "--xml volume status apptive") cat {FIXTURES}/status-brick-down.xml ;;
              # gluster exits non-zero with an XML answer here; the answer still counts.
              "--xml volume heal apptive info summary") cat {FIXTURES}/heal-summary-stopped.xml; exit 251 ;;
              *) echo "Connection failed. Please check if gluster daemon is operational."; exit 1 ;;
            esac
            """
        )
    )
    script.chmod(0o755)
    return script


def test_main_with_a_gluster_binary(collector: ModuleType, tmp_path: Path) -> None:
    binary = fake_gluster_binary(tmp_path)
    out = tmp_path / "textfile"
    out.mkdir()
    assert collector.main(["--textfile-dir", str(out), "--gluster", str(binary)]) == 0
    found = samples((out / "gluster.prom").read_text())
    assert found["gluster_up"] == 1
    assert found['gluster_volume_bricks_online{volume="apptive"}'] == 2
    assert found['gluster_volume_heal_info_success{volume="apptive"}'] == 0
    assert found["gluster_collector_last_run_timestamp_seconds"] > 1.7e9
    assert "gluster_collector_duration_seconds" in found


def test_main_when_glusterd_is_down(collector: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "textfile"
    out.mkdir()
    argv = ["--textfile-dir", str(out), "--gluster", str(tmp_path / "no-such-gluster")]
    assert collector.main(argv) == 0
    found = samples((out / "gluster.prom").read_text())
    assert found["gluster_up"] == 0


def test_main_fails_when_it_cannot_write(collector: ModuleType, tmp_path: Path) -> None:
    binary = fake_gluster_binary(tmp_path)
    missing = tmp_path / "no-such-dir"
    assert collector.main(["--textfile-dir", str(missing), "--gluster", str(binary)]) == 1


def test_script_runs_standalone(tmp_path: Path) -> None:
    """As the timer runs it: the system Python, no arguments beyond the command line."""
    from conftest import COLLECTOR

    binary = fake_gluster_binary(tmp_path)
    result = subprocess.run(
        [
            "/usr/bin/python3",
            str(COLLECTOR),
            "--textfile-dir",
            str(tmp_path),
            "--gluster",
            str(binary),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "gluster_up 1" in (tmp_path / "gluster.prom").read_text()
