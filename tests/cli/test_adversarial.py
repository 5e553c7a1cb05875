"""Regressions for defects found by adversarial testing: full disks, symlink loops, escaping paths,
malformed checkpoints, non-finite models, output trees inside input trees, concurrent runs."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from pixbatch.io.decode import decode_image

PIXBATCH = [sys.executable, "-m", "pixbatch", "--device", "cpu"]


def noisy(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def pixbatch(*args, file_limit=None, timeout=300):
    """Run the CLI in a subprocess; ``file_limit`` (bytes) makes the kernel refuse to grow any file
    past it, with one short write and then EFBIG: what a full disk does to the file being written."""

    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.RLIM_INFINITY))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([*PIXBATCH, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env,
                          preexec_fn=limit_files if file_limit else None)


def all_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# -- 1. A full disk never leaves a truncated output counted as done ---------------------------------

@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_upscale_on_a_full_disk_commits_nothing_and_resume_redoes_it(tmp_path, tiny_checkpoint, fmt):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(noisy(56, 64, seed=i)).save(src / f"{i}.png")
    ref = pixbatch("upscale", src, tmp_path / "ref", "--model", tiny_checkpoint, "--format", fmt)
    assert ref.returncode == 0, ref.stderr
    sizes = [p.stat().st_size for p in (tmp_path / "ref").iterdir()]
    # Every output fits in one 64 KiB encoder block: exactly the case where Pillow's own file writer
    # loses the short write and the truncated file used to be renamed into place.
    assert max(sizes) < 65536
    out = tmp_path / "out"
    full = pixbatch("--json", "upscale", src, out, "--model", tiny_checkpoint, "--format", fmt,
                    file_limit=min(sizes) // 2)
    assert full.returncode == 123, full.stderr
    assert json.loads(full.stdout)["done"] == 0
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("File too large" in e for e in errors), full.stderr
    assert all_files(out) == []  # no output, no temporary file
    again = pixbatch("--json", "upscale", src, out, "--model", tiny_checkpoint, "--format", fmt)
    assert again.returncode == 0 and json.loads(again.stdout)["done"] == 2
    for p in out.iterdir():
        assert decode_image(p)[0].shape[:2] == (112, 128)


def test_segment_on_a_full_disk_commits_nothing(tmp_path, seg_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(noisy(96, 96)).save(src / "a.png")
    tifffile.imwrite(src / "big.tif", noisy(300, 260, seed=1), tile=(64, 64), photometric="rgb")
    args = ("segment", src, None, "--model", seg_checkpoint, "--tile", 128, "--overlap", 16,
            "--probabilities", "--prob-format", "float", "--overlay")
    ref = pixbatch(*[tmp_path / "ref" if a is None else a for a in args])
    assert ref.returncode == 0, ref.stderr
    assert all_files(tmp_path / "ref") == ["a.png", "a_overlay.png", "a_prob.tif",
                                           "big.tif", "big_overlay.tif", "big_prob.tif"]
    limit = (tmp_path / "ref" / "a_prob.tif").stat().st_size // 2  # the float probabilities are the largest
    out = tmp_path / "out"
    full = pixbatch(*[out if a is None else a for a in args], file_limit=limit)
    assert full.returncode == 123, full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, full.stderr
    assert not (out / "a.png").exists() and not (out / "big.tif").exists()  # no mask: not done
    assert not [p for p in out.rglob(".*")]  # no temporary file
    again = pixbatch(*[out if a is None else a for a in args])
    assert again.returncode == 0, again.stderr
    assert all_files(out) == all_files(tmp_path / "ref")


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs here (needs root and mount namespaces)")
def test_upscale_onto_a_real_full_tmpfs(tmp_path, tiny_checkpoint):
    """The reported case itself: a 1 MiB tmpfs with 40 KiB free, JPEG outputs of 45-64 KiB."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(noisy(80, 96)).save(src / "a.png")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=1m tmpfs {mnt} && dd if=/dev/zero of={mnt}/filler bs=4k count=246 2>/dev/null"
              f" && {' '.join(PIXBATCH)} --json upscale {src} {mnt}/out --model {tiny_checkpoint} --format jpg"
              f" --quality 95; echo rc=$?; ls -a {mnt}/out")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert "rc=123" in proc.stdout, proc.stdout + proc.stderr
    assert "No space left on device" in proc.stderr
    assert proc.stdout.split("rc=123")[1].split() == [".", ".."]  # nothing in out/
