import errno
import os

import pytest

from pixbatch.io import atomic
from pixbatch.io.atomic import IncompleteWriteError, OutputExistsError, check_tiff_complete, write_bytes


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_short_writes_are_resumed(tmp_path, monkeypatch):
    real_write = os.write
    calls = []

    def dribble(fd, data):  # a file system that takes at most 7 bytes per call
        calls.append(len(data))
        return real_write(fd, bytes(data[:7]))

    monkeypatch.setattr(atomic.os, "write", dribble)
    payload = bytes(range(256)) * 3
    write_bytes(payload, tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == payload
    assert len(calls) == -(-len(payload) // 7)
    assert files_under(tmp_path) == ["x.bin"]


def test_full_disk_fails_and_leaves_nothing(tmp_path, monkeypatch):
    """What a full disk does: one short write, then ENOSPC. The output must not appear."""
    real_write = os.write
    room = [1000]

    def full(fd, data):
        if room[0] == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data[: room[0]]))
        room[0] -= n
        return n

    monkeypatch.setattr(atomic.os, "write", full)
    with pytest.raises(OSError) as info:
        write_bytes(b"x" * 5000, tmp_path / "out" / "y.jpg")
    assert info.value.errno == errno.ENOSPC
    assert files_under(tmp_path) == []


def test_a_size_on_disk_that_differs_is_an_error(tmp_path, monkeypatch):
    real_fstat = os.fstat

    class Short:
        def __init__(self, st):
            self.st_size = st.st_size - 1

    monkeypatch.setattr(atomic.os, "fstat", lambda fd: Short(real_fstat(fd)))
    with pytest.raises(IncompleteWriteError, match="99 of 100 bytes reached the disk"):
        write_bytes(b"z" * 100, tmp_path / "z.png")
    assert files_under(tmp_path) == []


def test_never_replaces_without_overwrite(tmp_path):
    dst = tmp_path / "keep.png"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        write_bytes(b"new", dst)
    assert dst.read_bytes() == b"precious" and files_under(tmp_path) == ["keep.png"]
    write_bytes(b"new", dst, overwrite=True)
    assert dst.read_bytes() == b"new"


def test_a_cut_short_tiff_is_detected(tmp_path):
    import numpy as np
    import tifffile

    path = tmp_path / "t.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (256, 256), np.uint8), tile=(64, 64))
    check_tiff_complete(path)  # whole: fine
    data = path.read_bytes()
    for keep in (len(data) - 100, 2000, 20):
        path.write_bytes(data[:keep])
        with pytest.raises(IncompleteWriteError):
            check_tiff_complete(path)


def test_files_get_the_umask_mode_like_any_output(tmp_path, tiny_checkpoint):
    """Checkpoints and outputs alike: 0o666 less the umask (temporary files were 0600 before)."""
    from pixbatch.models import create_model
    from pixbatch.models.checkpoint import save_checkpoint

    old = os.umask(0o022)
    try:
        write_bytes(b"x", tmp_path / "a.png")
        save_checkpoint(create_model(tiny_checkpoint).module, tmp_path / "m.safetensors", name="edsr_tiny_x2",
                        kwargs={"n_resblocks": 2, "n_feats": 8})
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644
