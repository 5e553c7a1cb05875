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
import torch
from PIL import Image

from pixbatch.io.decode import decode_image
from tests.conftest import noisy_rgb, photo_folder

PIXBATCH = [sys.executable, "-m", "pixbatch", "--device", "cpu"]


def pixbatch(*args, file_limit=None, timeout=300):
    """Run the CLI in a subprocess (``run`` below runs it in this process: no interpreter start-up);
    ``file_limit`` (bytes) makes the kernel refuse to grow any file
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
    src = photo_folder(tmp_path / "in", 2, (56, 64), pixels=noisy_rgb)
    assert run("upscale", src, tmp_path / "ref", "--model", tiny_checkpoint, "--format", fmt)[0] == 0
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
    code, stdout, _ = run("--json", "upscale", src, out, "--model", tiny_checkpoint, "--format", fmt)
    assert code == 0 and json.loads(stdout)["done"] == 2
    for p in out.iterdir():
        assert decode_image(p)[0].shape[:2] == (112, 128)


def test_segment_on_a_full_disk_commits_nothing(tmp_path, seg_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(noisy_rgb(96, 96)).save(src / "a.png")
    tifffile.imwrite(src / "big.tif", noisy_rgb(300, 260, seed=1), tile=(64, 64), photometric="rgb")
    args = ("segment", src, None, "--model", seg_checkpoint, "--tile", 128, "--overlap", 16,
            "--probabilities", "--prob-format", "float", "--overlay")
    assert run(*[tmp_path / "ref" if a is None else a for a in args])[0] == 0
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
    assert run(*[out if a is None else a for a in args])[0] == 0
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
    Image.fromarray(noisy_rgb(80, 96)).save(src / "a.png")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=1m tmpfs {mnt} && dd if=/dev/zero of={mnt}/filler bs=4k count=246 2>/dev/null"
              f" && {' '.join(PIXBATCH)} --json upscale {src} {mnt}/out --model {tiny_checkpoint} --format jpg"
              f" --quality 95; echo rc=$?; ls -a {mnt}/out")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert "rc=123" in proc.stdout, proc.stdout + proc.stderr
    assert "No space left on device" in proc.stderr
    assert proc.stdout.split("rc=123")[1].split() == [".", ".."]  # nothing in out/


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs here (needs root and mount namespaces)")
def test_a_disk_too_full_for_a_claim_fails_each_image_with_a_summary(tmp_path, tiny_checkpoint):
    """A tmpfs filled to the last byte: the destination check (0 bytes) passes, the claims cannot be
    written. Each image is one error line, the summary comes, exit 123, nothing is left behind."""
    src = photo_folder(tmp_path / "in", 3, 16)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=64k tmpfs {mnt} && mkdir {mnt}/out && "
              f"(dd if=/dev/zero of={mnt}/filler bs=4k 2>/dev/null; true)"
              f" && {' '.join(PIXBATCH)} --json upscale {src} {mnt}/out --model {tiny_checkpoint}; echo rc=$?;"
              f" ls -a {mnt}/out")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert "rc=123" in proc.stdout, proc.stdout + proc.stderr
    summary, listing = proc.stdout.split("rc=123")
    assert json.loads(summary)["failed"] == 3 and "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 3 and all("cannot claim its output" in e and "No space left" in e for e in errors), errors
    assert listing.split() == [".", ".."]


def test_claims_that_cannot_be_written_fail_each_image_in_every_path(tmp_path, tiny_checkpoint, monkeypatch):
    """Decoded in the main process, streamed by region, and going to a huge output: a claim that cannot be
    written (ENOSPC) is that image's error line, never a traceback; the run goes on and says so."""
    import errno

    from pixbatch.io import claims

    def full(path, owner):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(claims, "_create", full)
    src = photo_folder(tmp_path / "in", 2, 16)
    tifffile.imwrite(src / "tiled.tif", noisy_rgb(64, 64), tile=(32, 32), photometric="rgb")
    Image.fromarray(noisy_rgb(60, 50)).save(src / "huge.png")
    code, stdout, stderr = run("--json", "--device", "cpu", "upscale", src, tmp_path / "out", "--model",
                               tiny_checkpoint, "--workers", 0, "--max-pixels", 5000)
    assert code == 123 and json.loads(stdout)["failed"] == 4, stderr
    errors = error_lines(stderr)
    assert len(errors) == 4 and all("cannot claim its output" in e for e in errors), errors
    assert all_files(tmp_path / "out") == []


def test_a_rerun_with_nothing_to_do_cleans_what_killed_runs_left(tmp_path, tiny_checkpoint):
    """Stale temporary files and dead runs' claims are removed in finished folders too."""
    from pixbatch.io.atomic import HOST_ID
    from pixbatch.io.claims import claim, claim_path

    src = photo_folder(tmp_path / "in", 2, 16)
    out = tmp_path / "out"
    code, _, _ = run("--device", "cpu", "upscale", src, out, "--model", tiny_checkpoint)
    assert code == 0
    claim(out / "0.png", f"999999999 1 {os.uname().nodename}")
    (out / f".0.png.pixbatch-999999999-{HOST_ID}-0badf00d.tmp").write_bytes(b"half")
    code, stdout, _ = run("--json", "--device", "cpu", "upscale", src, out, "--model", tiny_checkpoint)
    assert code == 0 and json.loads(stdout)["skipped"] == 2
    assert all_files(out) == ["0.png", "1.png"] and not claim_path(out / "0.png").exists()


def run(*args):
    from click.testing import CliRunner

    from pixbatch.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- 2. A symlink loop is one error line; the rest runs ---------------------------------------------

@pytest.mark.parametrize("command", ["upscale", "segment"])
def test_symlink_loop_in_the_input_tree_is_one_error_line(tmp_path, tiny_checkpoint, seg_checkpoint, command):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(noisy_rgb(16, 16)).save(src / "good.png")
    os.symlink("self.png", src / "self.png")
    model = tiny_checkpoint if command == "upscale" else seg_checkpoint
    code, stdout, stderr = run("--device", "cpu", command, src, tmp_path / "out", "--model", model)
    assert code == 123
    assert error_lines(stderr) == [f"error: {src / 'self.png'}: symbolic link loop"]
    assert stdout.startswith("done 1, skipped 0, failed 1")
    assert (tmp_path / "out" / "good.png").is_file()


# -- 3. --suffix never writes outside the destination ----------------------------------------------

@pytest.mark.parametrize("suffix", ["/../../../escaped", "/"])
def test_suffix_with_a_separator_is_a_usage_error(tmp_path, tiny_checkpoint, suffix):
    src = tmp_path / "deep" / "er" / "in"
    src.mkdir(parents=True)
    Image.fromarray(noisy_rgb(16, 16)).save(src / "a.png")
    before = all_files(tmp_path)
    code, _, stderr = run("upscale", src, tmp_path / "deep" / "out", "--model", tiny_checkpoint, "--suffix", suffix)
    assert code == 2 and "cannot be part of a file name" in stderr
    assert all_files(tmp_path) == before


# -- 6. An output folder inside the input folder is never read as input ----------------------------

def test_destination_inside_the_source_three_runs(tmp_path, tiny_checkpoint):
    nest = tmp_path / "nest"
    nest.mkdir()
    Image.fromarray(noisy_rgb(16, 20)).save(nest / "a.png")
    args = ("--device", "cpu", "--json", "upscale", nest, nest / "out", "--model", tiny_checkpoint)
    results = [run(*args) for _ in range(3)]
    assert [r[0] for r in results] == [0, 0, 0], results[-1][2]
    assert [(json.loads(r[1])["done"], json.loads(r[1])["skipped"]) for r in results] == [(1, 0), (0, 1), (0, 1)]
    assert all_files(nest) == ["a.png", "out/a.png"]


def test_suffix_into_the_input_folder_never_reprocesses_outputs(tmp_path, tiny_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(noisy_rgb(16, 16)).save(src / "bird.png")
    args = ("--device", "cpu", "--json", "upscale", src, src, "--model", tiny_checkpoint, "--suffix", "_x2")
    codes = [run(*args)[0] for _ in range(3)]
    assert codes == [0, 0, 0]
    assert all_files(src) == ["bird.png", "bird_x2.png"]


# -- 7. Smaller ones ---------------------------------------------------------------------------------

def test_a_newline_in_a_file_name_keeps_its_error_on_one_line(tmp_path, tiny_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad\nname.png").write_bytes(b"not a png")
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "out", "--model", tiny_checkpoint)
    assert code == 123
    assert stderr.splitlines() == [f"error: {src}/bad\\nname.png: not an image (unrecognised format)"]


def test_planar_16bit_tiff_and_png_with_large_metadata_chunks(tmp_path, tiny_checkpoint):
    from PIL import ImageCms, PngImagePlugin

    src = tmp_path / "in"
    src.mkdir()
    planes = np.random.default_rng(0).integers(0, 65536, (3, 20, 26), dtype=np.uint16)
    tifffile.imwrite(src / "planar.tif", planes, photometric="rgb", planarconfig="separate")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() + b"\0" * (3 << 20)
    text = PngImagePlugin.PngInfo()
    text.add_text("comment", "x" * (3 << 20), zip=True)
    Image.fromarray(noisy_rgb(20, 26)).save(src / "chunks.png", icc_profile=icc, pnginfo=text)
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "out", "--model", tiny_checkpoint)
    assert code == 0, stderr
    arr, meta = decode_image(tmp_path / "out" / "planar.tif")
    assert arr.shape == (40, 52, 3) and meta.bits == 16
    assert decode_image(tmp_path / "out" / "chunks.png")[1].icc == icc  # the large profile is kept


def test_multi_frame_inputs_are_reported_once_and_library_warnings_stay_off_stderr(tmp_path, tiny_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    frames = [Image.fromarray(noisy_rgb(12, 12, seed=i)) for i in range(3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    tifffile.imwrite(src / "pages.tif", np.stack([noisy_rgb(12, 12, seed=i) for i in range(2)]), photometric="rgb")
    # A TIFF whose declared sample format disagrees with its data: tifffile logs a warning about it.
    Image.fromarray(noisy_rgb(12, 12)).save(src / "odd.tif", tiffinfo={339: 9})
    # EXIF whose tag points past its end: Pillow warns "Corrupt EXIF data" (a UserWarning on stderr).
    bad_exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x0f\x01\x02\x00\xff\xff\xff\x7f\x00\x00\x00\x00"
    Image.fromarray(noisy_rgb(12, 12)).save(src / "exif.jpg", exif=bad_exif)
    code, stdout, stderr = run("--device", "cpu", "upscale", src, tmp_path / "out", "--model", tiny_checkpoint)
    assert "note: 2 input(s) had several frames or pages" in stdout
    assert all(line.startswith("error:") for line in stderr.splitlines()), stderr  # nothing else
    code_v, _, stderr_v = run("--device", "cpu", "-v", "upscale", src, tmp_path / "out2", "--model", tiny_checkpoint)
    assert code_v == code == 123  # odd.tif cannot be read
    assert f"note: {src / 'exif.jpg'}: Corrupt EXIF data." in stderr_v


# -- 4. Malformed checkpoints: one line, exit 1, nothing written, in every command that loads one ------

def test_hostile_checkpoints_in_every_command(tmp_path, tiny_checkpoint):
    from tests.models.test_checkpoint import hostile_checkpoints

    files, canary = hostile_checkpoints(tmp_path / "ckpt", tiny_checkpoint)
    src = tmp_path / "in"
    (src / "masks").mkdir(parents=True)
    Image.fromarray(noisy_rgb(16, 16)).save(src / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(src / "masks" / "a.png")
    out = tmp_path / "out"
    commands = {
        "upscale": ("upscale", src, out, "--model"),
        "segment": ("segment", src, out, "--model"),
        "models": ("models",),
        "eval sr": ("eval", "sr", "--hr", src, "--model"),
        "eval seg": ("eval", "seg", "--images", src, "--masks", src / "masks", "--model"),
        "stylize": ("stylize", src, out, "--style"),
    }
    for name, path in files.items():
        for command, args in commands.items():
            code, stdout, stderr = run("--device", "cpu", *args, path)
            assert code == 1, (name, command, stderr)
            assert stdout == "" and len(stderr.splitlines()) == 1, (name, command, stderr)
            assert stderr.startswith("error: ") and "Traceback" not in stderr, (name, command, stderr)
            assert not out.exists(), (name, command)
    assert not canary.exists()


# -- 5. A model whose output is not finite never writes black images ---------------------------------

def _overflowing_checkpoint(folder, good):
    """Finite weights whose output overflows to Inf/NaN, in fp32 too."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(good))
    with safe_open(str(good), "pt") as f:
        metadata = f.metadata()
    first = next(k for k in tensors if k.endswith("weight"))
    tensors[first] = tensors[first].sign() * 3e38
    path = folder / "overflow.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_non_finite_output_fails_each_image_in_upscale_and_eval(tmp_path, tiny_checkpoint):
    model = _overflowing_checkpoint(tmp_path, tiny_checkpoint)
    src = photo_folder(tmp_path / "in", 2, 16, pixels=noisy_rgb)
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"out_{precision}"
        code, stdout, stderr = run("--device", "cpu", "--json", "upscale", src, out, "--model", model,
                                   "--precision", precision)
        assert code == 123
        assert error_lines(stderr) == [f"error: {src / f'{i}.png'}: model output is NaN or Inf even in fp32 "
                                       "(a damaged or diverged model)" for i in range(2)]
        assert json.loads(stdout)["done"] == 0 and all_files(out) == []
        if precision == "bf16":
            assert json.loads(stdout)["fp32_reruns"] == 2
    code, _, stderr = run("--device", "cpu", "eval", "sr", "--hr", src, "--model", model)
    # eval: each image that fails is one line; with none left to score, it cannot report anything (exit 1)
    assert code == 1 and error_lines(stderr) == [
        *(f"error: {src / f'{i}.png'}: model output is NaN or Inf even in fp32 (a damaged or diverged model)"
          for i in range(2)), f"error: none of the 2 images in {src} could be evaluated"]


def test_segment_counts_its_fp32_reruns_and_fails_non_finite_images(tmp_path, seg_checkpoint, monkeypatch):
    from pixbatch.runtime.prepare import Runner

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(noisy_rgb(40, 40)).save(src / "a.png")
    real_call = Runner.__call__

    def nan_in_reduced_precision(self, x):  # bf16 output is NaN; the fp32 rerun is real
        return torch.full_like(real_call(self, x), float("nan"))

    monkeypatch.setattr(Runner, "__call__", nan_in_reduced_precision)
    code, stdout, stderr = run("--device", "cpu", "--json", "segment", src, tmp_path / "out", "--model",
                               seg_checkpoint, "--precision", "bf16")
    assert code == 0, stderr
    assert json.loads(stdout)["fp32_reruns"] == 1 and (tmp_path / "out" / "a.png").is_file()
    monkeypatch.setattr(Runner, "run_fp32", nan_in_reduced_precision)
    code, stdout, stderr = run("--device", "cpu", "--json", "segment", src, tmp_path / "out2", "--model",
                               seg_checkpoint, "--precision", "bf16")
    assert code == 123
    assert error_lines(stderr) == [f"error: {src / 'a.png'}: model output is NaN or Inf even in fp32 "
                                   "(a damaged or diverged model)"]
    assert all_files(tmp_path / "out2") == []


# -- 7. Concurrent runs split the work; --workers is bounded --------------------------------------------

def test_outputs_claimed_by_a_live_run_are_left_to_it_and_taken_over_when_it_dies(tmp_path, tiny_checkpoint):
    from pixbatch.io.claims import claim, claim_path, owner_token

    src = photo_folder(tmp_path / "in", 4, 16)
    out = tmp_path / "out"
    other = subprocess.Popen(["sleep", "60"])  # stands for another pixbatch run, mid-job
    try:
        for i in (1, 3):
            claim(out / f"{i}.png", owner_token(other.pid))
        code, stdout, _ = run("--device", "cpu", "--json", "upscale", src, out, "--model", tiny_checkpoint,
                              "--workers", 0)
        summary = json.loads(stdout)
        assert code == 0 and (summary["done"], summary["skipped"]) == (2, 2)
        assert sorted(p.name for p in out.glob("*.png")) == ["0.png", "2.png"]  # not computed twice
    finally:
        other.kill()
        other.wait()
    code, stdout, _ = run("--device", "cpu", "--json", "upscale", src, out, "--model", tiny_checkpoint)
    assert code == 0 and json.loads(stdout)["done"] == 2  # the dead run's claims are taken over
    assert all_files(out) == ["0.png", "1.png", "2.png", "3.png"]  # no claim file left
    assert not claim_path(out / "1.png").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_concurrent_runs_split_one_destination(tmp_path, tiny_checkpoint, overwrite):
    """Claims split the work. With --overwrite an output finished by one run may be made again by the
    other (it was asked to overwrite), but every file stays complete: replaced in one step."""
    src = photo_folder(tmp_path / "in", 16, 96, name="{i:02d}.png", pixels=noisy_rgb)
    out = tmp_path / "out"
    cmd = [*PIXBATCH, "--json", "upscale", str(src), str(out), "--model", str(tiny_checkpoint), "--workers", "0",
           "--png-compression", "9", *(["--overwrite"] if overwrite else [])]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], results
    done = [json.loads(stdout)["done"] for stdout, _ in results]
    if overwrite:
        assert 16 <= sum(done) <= 32, done
    else:
        assert sum(done) == 16, done  # each image computed and written once
    assert all_files(out) == [f"{i:02d}.png" for i in range(16)]
    for p in out.iterdir():
        assert decode_image(p)[0].shape == (192, 192, 3)


def test_concurrent_runs_compute_every_image_exactly_once(tmp_path, tiny_checkpoint):
    """Several runs into one destination at once, a fifth of the outputs claimed by killed runs: every
    image is computed by exactly one run (none computes an image another then writes first). CI runs 3
    runs x 30 images; PIXBATCH_STRESS_RUNS=5 PIXBATCH_STRESS_IMAGES=200 for the full stress."""
    from pixbatch.io.claims import claim

    runs_n = int(os.environ.get("PIXBATCH_STRESS_RUNS", "3"))
    n = int(os.environ.get("PIXBATCH_STRESS_IMAGES", "30"))
    src = photo_folder(tmp_path / "in", n, 8, name="{i:03d}.png")
    out = tmp_path / "out"
    for i in range(0, n, 5):
        claim(out / f"{i:03d}.png", f"999999999 1 {os.uname().nodename}")
    cmd = [*PIXBATCH, "-v", "--json", "upscale", str(src), str(out), "--model", str(tiny_checkpoint), "--workers", "0"]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(runs_n)]
    results = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0] * runs_n, results
    done = [json.loads(stdout)["done"] for stdout, _ in results]
    assert sum(done) == n, done
    assert not any("wrote its output first" in stderr for _, stderr in results)  # computed twice
    assert all_files(out) == [f"{i:03d}.png" for i in range(n)]


def test_workers_are_bounded_by_cores_files_and_memory(tmp_path, tiny_checkpoint):
    src = photo_folder(tmp_path / "in", 6, 16)
    code, stdout, _ = run("--device", "cpu", "--json", "upscale", src, tmp_path / "out", "--model", tiny_checkpoint,
                          "--workers", 999)
    assert code == 0
    assert 1 <= json.loads(stdout)["settings"]["workers"] <= min(os.cpu_count(), 6)


def test_a_refused_pickle_is_exactly_one_line_in_a_fresh_process(tmp_path):
    import pickle

    from tests.models.test_checkpoint import Canary

    path = tmp_path / "code.pth"
    with open(path, "wb") as f:
        pickle.dump(Canary(tmp_path / "CANARY"), f, protocol=4)
    proc = pixbatch("models", path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {path}: cannot be read as plain weights")
    assert not (tmp_path / "CANARY").exists()


# -- 6. The file system changes under a run --------------------------------------------------------

def test_an_input_that_disappears_mid_run_is_one_error_line(tmp_path, tiny_checkpoint):
    """Planned, then deleted before it is decoded: one error line for it, the others are done."""
    import torch

    from pixbatch.io.discover import plan_jobs
    from pixbatch.models import create_model
    from pixbatch.runtime.engine import run_job
    from pixbatch.runtime.prepare import prepare_model
    from pixbatch.runtime.spec import JobSpec
    from pixbatch.tasks.upscale import UpscaleTask

    src = photo_folder(tmp_path / "in", 4, 16)
    plan = plan_jobs([src], tmp_path / "out")
    (src / "2.png").unlink()
    lines = []
    runner = prepare_model(create_model(tiny_checkpoint), torch.device("cpu"), torch.float32)
    report = run_job(UpscaleTask(runner), plan, JobSpec(workers=0), log=lines.append)
    assert report.done == 3 and [p for p, _ in report.failed] == [str(src / "2.png")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {src / '2.png'}: ")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "3.png"]


def test_a_destination_that_is_a_symlink_out_of_the_tree_is_refused(tmp_path, tiny_checkpoint):
    """Policy: an output's place holding a symlink that leads out of the output folder (to a file or
    nowhere) is refused with one error line, with or without --overwrite; what it points at is never
    touched."""
    src = photo_folder(tmp_path / "in", 3, 16)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0.png").write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "0.png").symlink_to(outside / "0.png")  # points at a file outside the output tree
    (out / "1.png").symlink_to(outside / "missing.png")  # dangling, outside
    for extra in ([], ["--overwrite"]):
        code, stdout, stderr = run("--json", "upscale", src, out, "--model", tiny_checkpoint, *extra)
        summary = json.loads(stdout)
        assert code == 123 and summary["failed"] == 2 and stderr.count("(through a symbolic link)") == 2
        assert (outside / "0.png").read_bytes() == b"precious" and not (outside / "missing.png").exists()
        assert (out / "0.png").is_symlink() and (out / "1.png").is_symlink()
    assert Image.open(out / "2.png").size == (32, 32)
