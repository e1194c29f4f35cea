"""``free_port`` hands out ports no outgoing connection can take first.

A port from ``bind(0)`` comes from the kernel's ephemeral range, the same
range client sockets draw their source ports from: in CI one was taken by
another connection before gunicorn bound it ("Address already in use").
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hookkit._face.gunicorn_process import free_port


def ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_ports_are_outside_the_ephemeral_range_and_free() -> None:
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert all(not low <= port <= high for port in ports), ports
    assert all(0 < port < 65536 for port in ports)
    for port in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_listening_port_is_never_handed_out() -> None:
    """Ports in use are skipped: with a thousand listeners open, none of the
    answers is one of them."""
    listeners = []
    try:
        for _ in range(1000):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listeners.append(sock)
            sock.bind(("127.0.0.1", free_port()))
            sock.listen()
        taken = {sock.getsockname()[1] for sock in listeners}
        assert len(taken) == 1000
        assert not taken & {free_port() for _ in range(200)}
    finally:
        for sock in listeners:
            sock.close()


def test_xdist_workers_hand_out_disjoint_ports_and_never_one_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two pytest-xdist workers never pick the same port (each has its own
    share), and one process never hands a port out twice."""
    from hookkit._face import gunicorn_process

    shares = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        shares.append(set(gunicorn_process._share(gunicorn_process._listen_ports())))
    assert not shares[0] & shares[1]
    assert not shares[1] & shares[2]
    assert not shares[0] & shares[2]
    assert set(gunicorn_process._listen_ports()) == shares[0] | shares[1] | shares[2]
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    given = [free_port() for _ in range(300)]
    assert len(set(given)) == len(given)
    assert set(given) <= shares[1]
