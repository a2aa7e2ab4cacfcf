"""The write lock of a knowledge base with the PostgreSQL catalog: a session advisory lock that
excludes writers in other processes (replicas on any host) and is released when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from rag.errors import Busy
from rag.locks import PgWriteLocks, advisory_key
from tests.unit.cli_helpers import ROOT

HOLD = """
import sys, time
from rag.locks import PgWriteLocks
with PgWriteLocks(sys.argv[1]).hold(sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


def holder(url: str, kb: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, url, kb], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_another_process_holding_the_lock_excludes_writers_until_it_dies(pg_url):
    locks = PgWriteLocks(pg_url)
    proc = holder(pg_url, "handbook")
    try:
        assert locks.held_elsewhere("handbook") and not locks.held_elsewhere("other")
        with pytest.raises(Busy, match="another process or replica"):
            with locks.hold("handbook", wait=False):
                pass
        with locks.hold("other", wait=False):  # other knowledge bases are free
            pass
    finally:
        proc.send_signal(signal.SIGKILL)  # a replica killed mid-write
        proc.wait()
    deadline = time.monotonic() + 10
    while locks.held_elsewhere("handbook") and time.monotonic() < deadline:
        time.sleep(0.05)
    with locks.hold("handbook", wait=False):  # the server released the dead session's lock
        assert not PgWriteLocks(pg_url).held_elsewhere("handbook")  # this thread holds it: re-entrant


def test_a_waiting_writer_gets_the_lock_when_the_holder_releases_it(pg_url):
    proc = holder(pg_url, "kb")
    started = time.monotonic()
    subprocess.Popen(["sh", "-c", f"sleep 1; kill {proc.pid}"])
    with PgWriteLocks(pg_url).hold("kb"):
        waited = time.monotonic() - started
    proc.wait()
    assert waited >= 0.9


def test_lock_keys_are_stable_32_bit_values():
    assert advisory_key("handbook") == advisory_key("handbook") != advisory_key("handbook2")
    assert -2**31 <= advisory_key("知识库") < 2**31
