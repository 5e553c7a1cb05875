import os
import socket
import subprocess
import time

import pytest

from pixbatch.io import claims
from pixbatch.io.claims import claim, claim_path, owner_token, release, remove_stale_claims


@pytest.fixture()
def other_process():
    """A live process that is not this one."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_claim_is_exclusive_and_released_only_by_its_owner(tmp_path, other_process):
    dst = tmp_path / "a.png"
    other = owner_token(other_process.pid)
    assert claim(dst, other)
    assert not claim(dst, owner_token())  # a live run holds it
    release(dst, owner_token())  # not ours: kept
    assert claim_path(dst).read_text() == other
    release(dst, other)
    assert not claim_path(dst).exists()
    assert claim(dst, owner_token()) and claim(dst, owner_token())  # re-claiming our own is fine


def test_a_dead_runs_claim_is_taken_over(tmp_path, other_process):
    dst = tmp_path / "a.png"
    token = owner_token(other_process.pid)
    claim(dst, token)
    other_process.kill()
    other_process.wait()
    assert claim(dst, owner_token())
    assert claim_path(dst).read_text() == owner_token()


def test_a_reused_pid_is_not_the_owner(tmp_path, other_process):
    """Same pid, another start time: the claim's owner is gone."""
    pid, start, host = owner_token(other_process.pid).split()
    assert start != "-"  # Linux: the start time is known
    claim(tmp_path / "a.png", f"{pid} {int(start) - 1} {host}")
    assert claim(tmp_path / "a.png", owner_token())


def test_claims_from_another_host_expire(tmp_path, monkeypatch):
    dst = tmp_path / "a.png"
    claim(dst, f"1 123 not-{socket.gethostname()}")
    assert not claim(dst, owner_token())
    old = time.time() - claims.FOREIGN_CLAIM_TTL - 10
    os.utime(claim_path(dst), (old, old))
    assert claim(dst, owner_token())


def test_stale_claims_are_swept(tmp_path, other_process):
    claim(tmp_path / "live.png", owner_token(other_process.pid))
    claim(tmp_path / "dead.png", "999999999 1 " + socket.gethostname())
    claim_path(tmp_path / "garbled.png").write_text("half a tok")
    assert remove_stale_claims(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == [claim_path(tmp_path / "live.png").name]
