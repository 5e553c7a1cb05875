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


def _claim_all(dsts, rounds, results):
    owner = owner_token()  # this process's
    won = []
    for _ in range(rounds):
        won += [str(d) for d in dsts if claim(d, owner)]
    results.put((owner, sorted(set(won))))


def test_racing_runs_claim_each_output_exactly_once_also_over_dead_claims(tmp_path):
    """Four processes claim the same 300 outputs at once, half of them held by a dead run: every output
    goes to exactly one of them (claims appear whole, take-overs are locked)."""
    import multiprocessing

    dsts = [tmp_path / f"{i}.png" for i in range(300)]
    for d in dsts[::2]:
        claim(d, "999999999 1 " + socket.gethostname())
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(dsts, 3, results)) for _ in range(4)]
    for p in procs:
        p.start()
    won = dict(results.get(timeout=60) for _ in procs)  # read while they live: their claims stay theirs
    counts = {str(d): sum(str(d) in w for w in won.values()) for d in dsts}
    assert all(n == 1 for n in counts.values()), {d: n for d, n in counts.items() if n != 1}
    for d in dsts:
        holder = claim_path(d).read_text()
        assert str(d) in won[holder]
    for p in procs:
        p.join(timeout=60)


def test_a_claim_is_never_seen_without_its_owner(tmp_path, monkeypatch):
    """Written under a temporary name and linked whole: a run reading it finds the token, never an empty
    file to take for a dead owner's; no temporary file is left."""
    seen = []
    real_link = os.link

    def link(src, dst, *a, **kw):
        real_link(src, dst, *a, **kw)
        seen.append(open(dst).read())

    monkeypatch.setattr(os, "link", link)
    assert claim(tmp_path / "a.png", owner_token())
    assert seen == [owner_token()]
    assert [p.name for p in tmp_path.iterdir()] == [claim_path(tmp_path / "a.png").name]


def test_an_empty_claim_being_written_is_honoured_for_a_moment(tmp_path):
    """File systems without hard links create the claim, then write it: an empty young one is live."""
    path = claim_path(tmp_path / "a.png")
    path.write_text("")
    assert not claim(tmp_path / "a.png", owner_token())
    old = time.time() - claims.UNWRITTEN_GRACE - 1
    os.utime(path, (old, old))
    assert claim(tmp_path / "a.png", owner_token())


def test_a_claim_that_cannot_be_written_raises_oserror(tmp_path, monkeypatch):
    import errno

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        claim(tmp_path / "a.png", owner_token())
    assert list(tmp_path.iterdir()) == []  # neither a claim nor a temporary file
