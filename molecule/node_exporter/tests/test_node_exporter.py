"""Node exporter on the host's own address, its collectors and its textfile directory."""

import time

import pytest

DEFAULTS_FILE = "/etc/default/prometheus-node-exporter"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
PORT = 9100


@pytest.fixture(scope="module")
def address(host) -> str:
    return host.check_output("hostname -I").split()[0]


def scrape(host, address: str) -> str:
    """The metrics page, fetched inside the host from its own address."""
    return host.check_output(
        "python3 -c 'import sys, urllib.request as u; "
        "print(u.urlopen(sys.argv[1], timeout=10).read().decode())' "
        f"http://{address}:{PORT}/metrics"
    )


def test_installed_enabled_running(host):
    assert host.package("prometheus-node-exporter").is_installed
    service = host.service("prometheus-node-exporter")
    assert service.is_enabled
    assert service.is_running


def test_defaults_file_is_managed(host, address):
    content = host.file(DEFAULTS_FILE).content_string
    assert "Ansible managed" in content
    assert f"--web.listen-address={address}:{PORT}" in content


def test_listens_on_the_host_address_only(host, address):
    assert host.socket(f"tcp://{address}:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    assert not host.socket(f"tcp://:::{PORT}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{PORT}").is_listening


def test_metrics_answer(host, address):
    metrics = scrape(host, address)
    assert "node_exporter_build_info" in metrics
    assert "node_load1" in metrics


def test_collectors_follow_the_lists(host, address):
    metrics = scrape(host, address)
    for enabled in ("systemd", "processes", "textfile"):
        assert f'node_scrape_collector_success{{collector="{enabled}"}} 1' in metrics
    assert 'collector="mdadm"' not in metrics
    assert (
        'node_systemd_unit_state{name="prometheus-node-exporter.service",state="active"' in metrics
    )


def test_textfile_directory_is_read(host, address):
    probe = f"{TEXTFILE_DIR}/molecule-probe.prom"
    host.check_output(f"echo 'molecule_textfile_probe 1' > {probe}.tmp && mv {probe}.tmp {probe}")
    try:
        for _ in range(10):
            if "molecule_textfile_probe 1" in scrape(host, address):
                break
            time.sleep(1)
        else:
            pytest.fail("the textfile collector did not read the probe file")
    finally:
        host.check_output(f"rm -f {probe}")


def test_debian_collector_timers_are_kept(host):
    assert host.package("prometheus-node-exporter-collectors").is_installed
    assert host.service("prometheus-node-exporter-apt.timer").is_enabled
