"""Every command over a folder of at least 300 hostile files (tests/fuzz/corpus.py): no traceback, no
hang, exit 0 or 123, exactly one `error:` line per rejected file and nothing else on stderr, every
output complete at its exact size, no temporary file left, bounded memory (the bombs included).

CI runs the 300-file set; PIXBATCH_FUZZ_FILES=3000 (say) makes a nightly-size one."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile
from PIL import Image

from tests.conftest import REPO
from tests.fuzz.corpus import make_corpus

FILES = int(os.environ.get("PIXBATCH_FUZZ_FILES", "300"))
TIMEOUT = 600  # seconds a command may take over the corpus: beyond it, it hangs
MEMORY = 2 << 30  # peak resident bytes of any command (a 100000 x 100000 IHDR is 30 GB decoded)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "in"
    made = make_corpus(folder, FILES, seed=0)
    assert len(made) >= FILES and len(list(folder.iterdir())) == len(made)
    return folder, made


def pixbatch(*args, cwd: Path) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pixbatch", *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=cwd, env=env)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert peak < MEMORY, f"peak RSS {peak / 2**30:.2f} GiB"
    return proc.returncode, proc.stdout, proc.stderr


def expected_size(src: Path) -> tuple[int, int]:
    """(width, height) of an input, upright: what Pillow reads from its header and EXIF."""
    with Image.open(src) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1) if im.format in ("JPEG", "WEBP", "PNG", "TIFF") else 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def opened_size(path: Path) -> tuple[int, int]:
    """Open an output completely (every byte decoded); its (width, height)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        arr = tifffile.imread(path)
        return arr.shape[1], arr.shape[0]
    with Image.open(path) as im:
        im.load()
        return im.size


def run_over(command: str, folder: Path, out: Path, args, made: dict, cwd: Path) -> tuple[dict, list[str]]:
    """A command over a corpus folder: exit 0 or 123, no traceback, nothing but `error:` lines on stderr,
    every file done, failed or skipped. Its summary and its error lines."""
    code, stdout, stderr = pixbatch("--json", command, folder, out, *args, cwd=cwd)
    assert code in (0, 123), stderr[-2000:]
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), [x for x in lines if not x.startswith("error: ")][:5]
    summary = json.loads(stdout)
    assert summary["done"] + summary["failed"] + summary["skipped"] == len(made)
    return summary, lines


def check_engine_run(command: str, corpus, tmp_path, args, scale: int, suffix_of=None):
    from pixbatch.io.discover import plan_jobs

    folder, made = corpus
    out = tmp_path / "out"
    summary, lines = run_over(command, folder, out, args, made, tmp_path)
    assert len(lines) == summary["failed"] == len({e["path"] for e in summary["errors"]})
    rejected = {e["path"] for e in summary["errors"]}
    plan = plan_jobs([folder], out, suffix_of=suffix_of, overwrite=True)  # every job, done or not
    written = 0
    for job in plan.todo:
        if str(job.src) in rejected:
            assert not job.dst.exists(), job.dst
            continue
        assert job.dst.is_file(), (job.src, "neither an output nor an error line")
        w, h = expected_size(job.src)
        assert opened_size(job.dst) == (w * scale, h * scale), job.src
        written += 1
    assert written == summary["done"]
    leftovers = [p.name for p in out.rglob(".*")]
    assert not leftovers, leftovers[:5]
    return summary


def test_upscale_over_the_corpus(corpus, tmp_path, tiny_checkpoint):
    summary = check_engine_run("upscale", corpus, tmp_path, ["--model", tiny_checkpoint], 2)
    assert summary["done"] >= 40 and summary["failed"] >= 200  # the seeds and the damaged ones


def test_upscale_into_huge_outputs_over_the_corpus(corpus, tmp_path, tiny_checkpoint):
    """A low --max-pixels: every output above it goes the huge-output way (a tiled BigTIFF written band by
    band, committed by a hard link), where a temporary name once stayed linked to each finished file."""
    from pixbatch.io.discover import header_pixels, output_suffix

    limit = 1024  # px: most of the corpus is below it, and above it at x2

    def suffix_of(p: Path) -> str:
        pixels = header_pixels(p)
        return ".tif" if pixels is not None and pixels * 4 > limit else output_suffix(p, "same")

    summary = check_engine_run("upscale", corpus, tmp_path, ["--model", tiny_checkpoint, "--max-pixels", limit], 2,
                               suffix_of=suffix_of)
    assert summary["big_outputs"] >= 10 and summary["done"] >= summary["big_outputs"]


def test_segment_over_the_corpus(corpus, tmp_path, seg_checkpoint):
    from pixbatch.io.regions import is_tiled_tiff

    check_engine_run("segment", corpus, tmp_path, ["--model", seg_checkpoint], 1,
                     suffix_of=lambda p: ".tif" if is_tiled_tiff(p) else ".png")


def test_stylize_over_the_corpus(corpus, tmp_path, style_checkpoint):
    check_engine_run("stylize", corpus, tmp_path, ["--style", style_checkpoint], 1)


def check_other_run(code: int, stdout: str, stderr: str, made: dict) -> int:
    """Exit 0/123, no traceback; stderr holds error lines (and a trainer's progress lines) only."""
    assert code in (0, 123), stderr[-2000:]
    assert "Traceback" not in stderr
    lines = [x for x in stderr.splitlines() if not x.startswith("step ")]
    assert all(line.startswith("error: ") for line in lines), [x for x in lines if not x.startswith("error: ")][:5]
    return len(lines)


def test_eval_over_the_corpus(corpus, tmp_path, tiny_checkpoint, seg_checkpoint):
    folder, made = corpus
    code, stdout, stderr = pixbatch("--json", "eval", "sr", "--hr", folder, "--model", tiny_checkpoint, cwd=tmp_path)
    errors = check_other_run(code, stdout, stderr, made)
    summary = json.loads(stdout)
    assert code == 123 and errors == len(summary["errors"]) and len(summary["images"]) + errors == len(made)
    code, stdout, stderr = pixbatch("eval", "seg", "--images", folder, "--masks", folder, "--model",
                                    seg_checkpoint, cwd=tmp_path)
    # stems shared between formats (seed.png, seed.jpg) cannot be paired: refused at the start, one line
    assert code == 1 and len(stderr.splitlines()) == 1 and stderr.startswith("error: no image for")
    unique = tmp_path / "unique"  # each file its own stem, paired with itself as image and mask
    unique.mkdir()
    for i, name in enumerate(sorted(made)):
        (unique / f"{i:04d}{Path(name).suffix}").write_bytes((folder / name).read_bytes())
    code, stdout, stderr = pixbatch("--json", "eval", "seg", "--images", unique, "--masks", unique, "--model",
                                    seg_checkpoint, cwd=tmp_path)
    errors = check_other_run(code, stdout, stderr, made)
    summary = json.loads(stdout)
    assert code == 123 and errors == len(summary["errors"]) and len(summary["per_image"]) + errors == len(made)


def test_train_over_the_corpus(corpus, tmp_path):
    folder, made = corpus
    code, stdout, stderr = pixbatch("train", "sr", "--data", folder, "--arch", "edsr_tiny_x2", "--model-kwargs",
                                    '{"n_resblocks": 1, "n_feats": 8}', "--steps", "1", "--batch-size", "1",
                                    "--patch", "8", "--out", tmp_path / "m.safetensors", cwd=tmp_path)
    errors = check_other_run(code, stdout, stderr, made)
    assert code == 123 and errors > 100 and (tmp_path / "m.safetensors").is_file()


def test_models_on_files_that_are_not_checkpoints(corpus, tmp_path):
    from click.testing import CliRunner

    from pixbatch.cli import cli

    folder, made = corpus
    for name in sorted(made)[:: max(1, len(made) // 25)]:
        path = folder / name
        target = path.with_suffix(".pth")
        target.write_bytes(path.read_bytes())
        result = CliRunner().invoke(cli, ["models", str(target)])
        target.unlink()
        assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1, (name, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def tiny_onnx() -> bytes:
    """A working x2 ONNX model: a 3x3 conv to 12 channels and a depth-to-space."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (12, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode="CRD")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h2", "w2"])],
                              initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# one process loads every file (a native crash fails the test instead of the suite); per file, what
# `pixbatch models FILE` and `pixbatch upscale IMAGE OUT --model FILE` did
ONNX_LOOP = """
import json, sys
from pathlib import Path
from click.testing import CliRunner
from pixbatch.cli import cli
folder, image, out = map(Path, sys.argv[1:4])
for path in sorted(folder.iterdir()):
    seen = {"file": path.name}
    for name, args in (("models", ["models", str(path)]),
                       ("upscale", ["--device", "cpu", "upscale", str(image), str(out / path.stem), "--model", str(path)])):
        result = CliRunner().invoke(cli, args)
        seen[name] = [result.exit_code, result.stderr, (out / path.stem / image.name).is_file()]
    print(json.dumps(seen), flush=True)
"""


def test_damaged_onnx_models(tmp_path):
    """Truncated, bit-flipped and garbage .onnx files: each loads (exit 0) or is one `error:` line and exit 1
    with nothing written, from `pixbatch models` and `--model` alike."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tests.conftest import gradient_rgb
    from tests.fuzz.corpus import make_onnx_corpus

    made = make_onnx_corpus(tmp_path / "models", tiny_onnx(), n=40)
    Image.fromarray(gradient_rgb(20, 24)).save(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, "-c", ONNX_LOOP, tmp_path / "models", tmp_path / "a.png", tmp_path / "out"],
                          capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(seen) == len(made)
    for row in seen:
        for command in ("models", "upscale"):
            code, stderr, written = row[command]
            if code:
                assert code == 1 and stderr.count("\n") == 1 and stderr.startswith("error: "), (row["file"], stderr)
                assert not written or command == "models", row["file"]
            else:
                assert command == "models" or written, row["file"]
    refused = sum(1 for row in seen if row["models"][0])
    assert seen[-1]["file"] == "valid.onnx" and seen[-1]["models"][0] == 0 and refused >= 20, refused


def test_upscale_over_damaged_videos(tmp_path, tiny_checkpoint):
    """Working clips (H.264 MP4 with audio, VP9 WebM, FFV1 MKV), their truncations and bit flips, garbage
    with video extensions: exit 0 or 123, one `error:` line per rejected file (damage FFmpeg conceals, such
    as FFV1's checksum mismatches and a Matroska file cut short, included), every output whole (all the
    clip's frames), nothing half-written left."""
    av = pytest.importorskip("av")
    from tests.conftest import make_clip
    from tests.fuzz.corpus import make_video_corpus

    clips = {}
    for name, codec, extra in (("clip.mp4", "libx264", {"audio": True}), ("clip.webm", "libvpx-vp9", {}),
                               ("clip.mkv", "ffv1", {})):
        make_clip(tmp_path / name, frames=8, size=(32, 48), codec=codec, **extra)
        clips[name] = (tmp_path / name).read_bytes()
    folder = tmp_path / "in"
    made = make_video_corpus(folder, clips, n=30)
    out = tmp_path / "out"
    summary, lines = run_over("upscale", folder, out, ["--model", tiny_checkpoint], made, tmp_path)
    assert len(lines) == summary["failed"] >= 5
    outputs = [p for p in out.rglob("*") if p.is_file()]
    assert len(outputs) == summary["done"] >= 3
    for path in outputs:
        with av.open(str(path)) as container:
            sizes = [(f.width, f.height) for f in container.decode(video=0)]
        assert sizes == [(96, 64)] * 8, (path.name, sizes)  # a file accepted is whole: all 8 frames
    assert not [p.name for p in out.rglob(".*")]
