"""pixbatch on Ray (a local cluster of 2 CPUs shared by these tests): the same bytes as a run in one
process, resume, bad files, a killed worker and a killed driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from tests.conftest import REPO, gradient_rgb

ray = pytest.importorskip("ray", reason='the Ray tests need pixbatch[ray]')


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def folder(root: Path, n: int = 6) -> Path:
    src = root / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(gradient_rgb(30 + 6 * i, 40, seed=i)).save(src / f"{i}.png")
    Image.fromarray(gradient_rgb(24, 24, seed=9)).save(src / "sub" / "nested.jpg", quality=90)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    return src


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_bytes_as_one_process_and_the_same_report(cluster, tmp_path, tiny_checkpoint):
    src = folder(tmp_path)
    code1, out1, err1 = run("--json", "upscale", src, tmp_path / "local", "--model", tiny_checkpoint)
    code2, out2, err2 = run("--json", "upscale", src, tmp_path / "ray", "--model", tiny_checkpoint, "--ray", "auto")
    assert code1 == code2 == 123
    assert files(tmp_path / "local") == files(tmp_path / "ray")  # no temporary or claim file left either
    one, many = json.loads(out1), json.loads(out2)
    assert (many["done"], many["failed"], many["skipped"]) == (one["done"], one["failed"], one["skipped"]) == (7, 1, 0)
    assert many["settings"]["executor"] == "ray" and many["settings"]["ray_workers"] == 1
    assert err2.count("error:") == 1 and "broken.png" in err2
    assert [e for e in err1.splitlines() if e.startswith("error:")] == [e for e in err2.splitlines()
                                                                       if e.startswith("error:")]
    # resume: only the missing outputs are scheduled
    (tmp_path / "ray" / "3.png").unlink()
    (tmp_path / "ray" / "sub" / "nested.jpg").unlink()
    code, out, _ = run("--json", "upscale", src, tmp_path / "ray", "--model", tiny_checkpoint, "--ray", "auto")
    again = json.loads(out)
    assert code == 123 and (again["done"], again["skipped"]) == (2, 5)
    assert files(tmp_path / "local") == files(tmp_path / "ray")


def test_segment_and_stylize_and_a_streamed_tiff_on_ray(cluster, tmp_path, seg_checkpoint, style_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(gradient_rgb(50, 60)).save(src / "a.png")
    tifffile.imwrite(src / "big.tif", gradient_rgb(140, 120, seed=2), tile=(32, 32), photometric="rgb")
    for command, extra in (("segment", ["--model", seg_checkpoint, "--overlay", "--tile", "64"]),
                           ("stylize", ["--style", style_checkpoint, "--tile", "64", "--precision", "fp32"])):
        assert run(command, src, tmp_path / f"{command}-local", *extra)[0] == 0
        code, out, _ = run("--json", command, src, tmp_path / f"{command}-ray", *extra, "--ray", "auto",
                           "--ray-workers", "2")
        assert code == 0 and json.loads(out)["done"] == 2 and json.loads(out)["settings"]["ray_workers"] == 2, out
        assert files(tmp_path / f"{command}-local") == files(tmp_path / f"{command}-ray"), command


def test_a_killed_worker_loses_nothing(cluster, tmp_path, tiny_checkpoint):
    """A model worker dies in the middle of an image: Ray starts another and retries its batch; every
    output ends complete and equal to a one-process run's, none twice, no partial file."""
    from pixbatch.cli.session import load_runner
    from pixbatch.io.discover import plan_jobs
    from pixbatch.runtime.jobs import Report
    from pixbatch.runtime.ray_executor import RaySettings, run_on_ray
    from pixbatch.runtime.spec import ComputeSpec, JobSpec, ModelSpec
    from pixbatch.tasks.upscale import UpscaleTask

    src = folder(tmp_path)
    marker = tmp_path / "died-once"

    class DiesOnce(UpscaleTask):  # defined here: shipped to the workers by value
        def post(self, y, meta, rows):
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return super().post(y, meta, rows)

    spec = JobSpec(model=ModelSpec(str(tiny_checkpoint)), windowing=UpscaleTask.windowing(),
                   compute=ComputeSpec(device="cpu"))  # as the command's defaults: compared with its bytes
    load = partial(load_runner, spec.model, spec.compute, n_jobs=8)
    make = partial(DiesOnce)
    plan = plan_jobs([src], tmp_path / "ray")
    lines: list[str] = []
    report = run_on_ray(make, make(load()), load, plan, spec,
                        RaySettings(address="auto"), progress=False, log=lines.append, info=lambda m: None,
                        report=Report())
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker process died
    assert report.done + report.skipped == 7 and len(report.failed) == 1 and len(lines) == 1
    assert run("upscale", src, tmp_path / "local", "--model", tiny_checkpoint)[0] == 123
    assert files(tmp_path / "local") == files(tmp_path / "ray")


def test_a_killed_driver_loses_nothing_and_the_rerun_finishes_the_rest(cluster, tmp_path, tiny_checkpoint):
    src = folder(tmp_path, n=12)
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "pixbatch", "upscale", str(src), str(out), "--model", str(tiny_checkpoint),
           "--ray", cluster]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*.png")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name for p in out.glob("*.png")}
    assert first, "no output appeared before the driver was killed"
    for p in out.rglob("*"):  # whatever was written is complete
        if p.is_file() and p.suffix == ".png" and not p.name.startswith("."):
            with Image.open(p) as im:
                im.load()
    code, stdout, _ = run("--json", "upscale", src, out, "--model", tiny_checkpoint, "--ray", "auto")
    summary = json.loads(stdout)
    assert code == 123 and summary["done"] + summary["skipped"] == 13 and summary["done"] <= 13 - len(first)
    assert run("upscale", src, tmp_path / "local", "--model", tiny_checkpoint)[0] == 123
    assert files(tmp_path / "local") == files(out)


def test_ray_option_errors(tmp_path, tiny_checkpoint, monkeypatch):
    Image.fromarray(gradient_rgb(8, 8)).save(tmp_path / "a.png")
    result = CliRunner().invoke(cli, ["upscale", str(tmp_path / "a.png"), str(tmp_path / "o"), "--model",
                                      str(tiny_checkpoint), "--ray-workers", "2"])
    assert result.exit_code == 2 and "--ray-workers and --ray-gpus-per-worker need --ray" in result.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    result = CliRunner().invoke(cli, ["upscale", str(tmp_path / "a.png"), str(tmp_path / "o"), "--model",
                                      str(tiny_checkpoint), "--ray", "local"])
    assert result.exit_code == 1 and 'pip install "pixbatch[ray]"' in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "o" / "a.png").exists()


def test_no_cluster_at_the_address_is_one_clear_error(tmp_path, tiny_checkpoint):
    Image.fromarray(gradient_rgb(8, 8)).save(tmp_path / "a.png")
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, "-m", "pixbatch", "upscale", str(tmp_path / "a.png"), str(tmp_path / "o"),
                           "--model", str(tiny_checkpoint), "--ray", "127.0.0.1:1"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1 and "cannot connect to Ray" in proc.stderr, proc.stderr
    assert not (tmp_path / "o" / "a.png").exists()


def test_sigterm_unwinds_like_ctrl_c_and_the_local_cluster_goes_with_the_run(tmp_path, tiny_checkpoint):
    """SIGTERM mid-run under --ray local: writers finish, `interrupted:` and the summary, exit 130 (Ray's
    native handler made it a stack dump and exit 134); Ray's own log lines stay off stderr; the cluster
    the run started is shut down with it (its processes lingered for minutes)."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        Image.fromarray(gradient_rgb(96, 96, seed=i)).save(src / f"{i:02d}.png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pixbatch", "--json", "upscale", str(src), str(out), "--model",
                             str(tiny_checkpoint), "--ray", "local"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*.png")) and proc.poll() is None:
        time.sleep(0.05)
    started = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == proc.pid]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted: finished outputs are complete" in stderr and json.loads(stdout)["interrupted"] is True
    assert "SIGTERM received" not in stderr and "logging.cc" not in stderr and "(raylet)" not in stderr, stderr
    assert started, "the run started no Ray process"
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in started):
        time.sleep(0.2)
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()], "Ray processes outlived the run"
    for p in out.glob("*.png"):  # whatever was written is complete
        with Image.open(p) as im:
            im.load()


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_a_video_on_ray_has_the_frames_of_one_process(cluster, tmp_path, tiny_checkpoint):
    """A video among images, with --ray: one unit of work on one worker, the same frames and timestamps as
    a run in one process (lossless FFV1, so frame for frame)."""
    av = pytest.importorskip("av")
    from tests.conftest import make_clip

    src = folder(tmp_path, n=2)
    make_clip(src / "clip.mp4", frames=8, audio=True)
    outs = {}
    for where, extra in (("local", []), ("ray", ["--ray", "auto"])):
        code, _, stderr = run("upscale", src, tmp_path / where, "--model", tiny_checkpoint, "--codec", "ffv1", *extra)
        assert code == 123, stderr  # the broken PNG
        with av.open(str(tmp_path / where / "clip.mkv")) as c:
            outs[where] = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]
    assert len(outs["ray"]) == 8
    assert all(a[0] == b[0] and (a[1] == b[1]).all() for a, b in zip(outs["local"], outs["ray"]))


def test_an_onnx_model_on_ray_gives_the_bytes_of_one_process(cluster, tmp_path):
    """--model file.onnx with its options (an input order the file's metadata does not state): the workers load
    the file as the driver does."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    from pixbatch.models import create_model
    from pixbatch.models.onnx_export import export_onnx

    export_onnx(create_model("edsr_tiny_x2"), tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    del model.metadata_props[:]  # what the file does not say, the options do
    onnx.save(model, str(tmp_path / "m.onnx"))
    src = folder(tmp_path, n=3)
    common = ["--json", "upscale", src]
    options = ["--model", tmp_path / "m.onnx", "--input-order", "bgr", "--backend", "onnxruntime"]
    code1, _, _ = run(*common, tmp_path / "local", *options)
    code2, out2, _ = run(*common, tmp_path / "ray", *options, "--ray", "auto")
    assert code1 == code2 == 123 and json.loads(out2)["settings"]["executor"] == "ray"
    assert files(tmp_path / "local") == files(tmp_path / "ray") and len(files(tmp_path / "ray")) == 4


def test_a_long_video_is_split_at_keyframes_across_workers(cluster, tmp_path, tiny_checkpoint):
    """With two workers, a video of 36 frames (B-frames, a keyframe every 6, VFR, audio) runs as parts cut at
    keyframes, one per worker, joined in order: the frames, timestamps and audio packets of a run in one
    process (lossless FFV1, so frame for frame), and nothing left beside the output."""
    av = pytest.importorskip("av")
    from tests.conftest import make_clip

    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "long.mp4", frames=36, vfr=True, audio=True, gop=6, bframes=2)
    outs, audio = {}, {}
    for where, extra in (("local", []), ("ray", ["--ray", "auto", "--ray-workers", 2])):
        code, _, stderr = run("-v", "upscale", src, tmp_path / where, "--model", tiny_checkpoint, "--codec", "ffv1",
                              "--segment-frames", 5, *extra)
        assert code == 0, stderr
        with av.open(str(tmp_path / where / "long.mkv")) as c:
            outs[where] = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]
        with av.open(str(tmp_path / where / "long.mkv")) as c:
            audio[where] = [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]
    assert "split at keyframes into 2 parts of 18, 18 frames" in stderr
    assert len(outs["ray"]) == 36 and [p for p, _ in outs["ray"]] == [p for p, _ in outs["local"]]
    assert all((a[1] == b[1]).all() for a, b in zip(outs["local"], outs["ray"]))
    assert audio["ray"] == audio["local"] and audio["ray"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["long.mkv"]


def test_a_split_video_with_a_damaged_part_fails_once_and_leaves_nothing(cluster, tmp_path, tiny_checkpoint):
    """Zeroed bytes in the second half of a split video: one error line for the video, exit code 123, and
    neither an output nor finished parts are left."""
    pytest.importorskip("av")
    from tests.conftest import make_clip

    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "long.mp4", frames=36, size=(96, 128), gop=6)
    data = bytearray((src / "long.mp4").read_bytes())
    data[len(data) * 3 // 4: len(data) * 3 // 4 + 400] = bytes(400)
    (src / "long.mp4").write_bytes(bytes(data))
    code, _, stderr = run("-v", "upscale", src, tmp_path / "out", "--model", tiny_checkpoint, "--codec", "ffv1",
                          "--segment-frames", 5, "--ray", "auto", "--ray-workers", 2)
    assert code == 123, stderr
    assert "split at keyframes into 2 parts" in stderr
    assert stderr.count("error:") == 1 and "long.mp4" in stderr, stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
