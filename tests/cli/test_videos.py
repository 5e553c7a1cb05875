"""Videos through the commands: every frame with its timestamp, the other streams copied, colour kept,
bad videos one error line each (tests make their own clips with PyAV)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from tests.conftest import clip_frame, make_clip

av = pytest.importorskip("av")


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def streams(path: Path) -> dict:
    """What a test compares of a video file: its video frames (pixels, pts in seconds), the other streams'
    packets (hashes and times), chapters, metadata and the video stream's colour tags and pixel format."""
    out = {"frames": [], "pts": [], "packets": {}}
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        cc = v.codec_context
        out["video"] = {"size": (cc.width, cc.height), "pix_fmt": cc.pix_fmt, "codec": cc.name,
                        "colour": (cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc)}
        out["chapters"] = [(round(float(ch["start"] * ch["time_base"]), 3), ch["metadata"]) for ch in c.chapters()]
        out["title"] = c.metadata.get("title") or c.metadata.get("TITLE")
        for packet in c.demux():
            if packet.stream.type == "video":  # the empty packet at the end flushes the decoder
                for frame in packet.decode():
                    out["pts"].append(round(float(frame.pts * frame.time_base), 6))
                    out["frames"].append(frame.to_ndarray(format="rgb24" if cc.format.name.find("10") < 0
                                                          else "rgb48le"))
            elif packet.size:
                key = f"{packet.stream.type}:{packet.stream.codec_context.name if packet.stream.codec_context else ''}"
                out["packets"].setdefault(key, []).append(
                    (hashlib.sha256(bytes(packet)).hexdigest(), round(float(packet.pts * packet.time_base), 6)))
    return out


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(peak * peak / mse)


def test_upscaling_a_video_keeps_every_frame_its_time_and_the_other_streams(tmp_path):
    """VFR clip with audio, subtitles, chapters and a title: the output has the same frames in the same
    order at the same times, twice the size, the same colour tags, every audio and subtitle packet
    byte for byte, the chapters and the title; and each frame is the upscaled input frame."""
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=14, vfr=True, audio=True, subtitles=True, chapters=True)
    code, stdout, stderr = run("--json", "--device", "cpu", "upscale", src, tmp_path / "out", "--scale", "2")
    assert code == 0, stderr
    assert json.loads(stdout)["done"] == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mkv"]  # no temporary file left
    before, after = streams(src), streams(tmp_path / "out" / "clip.mkv")
    assert len(after["frames"]) == len(before["frames"]) == 14
    assert after["pts"] == before["pts"]  # variable frame rate kept, frame for frame
    assert after["packets"] == before["packets"] and set(after["packets"]) == {"audio:aac", "subtitle:srt"}
    assert after["chapters"] == before["chapters"] and after["title"] == "pixbatch test clip"
    assert after["video"]["size"] == (128, 96) and after["video"]["colour"] == before["video"]["colour"]
    assert after["video"]["pix_fmt"] == "yuv420p" and after["video"]["codec"] == "h264"
    # each frame is the model's output for that input frame: FFV1 (lossless 4:4:4) leaves only the rounding
    # of RGB -> YCbCr -> RGB; H.264 (crf 18, 4:2:0) its own loss on top
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "exact", "--scale", "2", "--codec", "ffv1")
    assert code == 0, stderr
    exact = streams(tmp_path / "exact" / "clip.mkv")
    assert exact["video"]["pix_fmt"] == "yuv444p" and exact["pts"] == before["pts"]
    import torch

    from pixbatch.cli.session import load_runner
    from pixbatch.runtime.spec import ComputeSpec, ModelSpec
    from pixbatch.tasks.upscale import upscale_tensor

    runner = load_runner(ModelSpec(None, 2), ComputeSpec(device="cpu"), n_jobs=1)
    for i in (0, 7, 13):
        x = torch.from_numpy(before["frames"][i]).permute(2, 0, 1)[None].float() / 255
        y = upscale_tensor(runner, x)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        diff = np.abs(exact["frames"][i].astype(int) - y).max()
        assert diff <= 3 and psnr(after["frames"][i], y) > 30, i


def test_segmenting_a_video_writes_lossless_masks_equal_to_the_frames_masks(tmp_path):
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=6, size=(40, 56))
    code, _, stderr = run("--device", "cpu", "segment", src, tmp_path / "out", "--overlay")
    assert code == 0, stderr
    masks = streams(tmp_path / "out" / "clip.mkv")  # FFV1 needs Matroska: the name says so
    assert masks["video"]["codec"] == "ffv1" and masks["video"]["pix_fmt"] == "gray"
    assert (tmp_path / "out" / "clip_overlay.mp4").is_file()
    frames = streams(src)["frames"]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:02d}.png")
    code, _, stderr = run("--device", "cpu", "segment", folder, tmp_path / "pngs", "--workers", 0)
    assert code == 0, stderr
    for i, mask in enumerate(masks["frames"]):
        expected = np.asarray(Image.open(tmp_path / "pngs" / f"{i:02d}.png").convert("L"))
        assert np.array_equal(mask[..., 0], expected), i


def test_ten_bit_video_stays_ten_bit(tmp_path):
    src = tmp_path / "deep.mkv"
    make_clip(src, frames=4, bits=16, codec="libx265")
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "out", "--scale", "2")
    assert code == 0, stderr
    out = streams(tmp_path / "out" / "deep.mkv")
    assert out["video"]["pix_fmt"] == "yuv420p10le" and len(out["frames"]) == 4
    assert out["frames"][0].dtype == np.uint16
    # the frames are the model's output at 16 bits (not rounded to 8 on the way): 10-bit H.265 at crf 20
    import torch

    from pixbatch.cli.session import load_runner
    from pixbatch.runtime.spec import ComputeSpec, ModelSpec
    from pixbatch.tasks.upscale import upscale_tensor

    runner = load_runner(ModelSpec(None, 2), ComputeSpec(device="cpu", precision="fp32"), n_jobs=1)
    frame = streams(src)["frames"][0]
    x = torch.from_numpy(frame.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    y = upscale_tensor(runner, x)[0].clamp(0, 1).permute(1, 2, 0).numpy() * 65535
    assert psnr(out["frames"][0], y, peak=65535) > 30
    assert np.mean(out["frames"][0] % 257 != 0) > 0.5  # not 8-bit values widened (those are multiples of 257)


def test_an_odd_output_size_is_written_444_not_padded(tmp_path):
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=3, size=(24, 30))
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "out", "--scale", "3")  # 90x72: even
    assert code == 0, stderr
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "odd", "--scale", "2", "--outscale", "1.5")
    assert code == 0, stderr
    out = streams(tmp_path / "odd" / "clip.mp4")
    assert out["video"]["size"] == (45, 36) and out["video"]["pix_fmt"] == "yuv444p"


def test_a_rotated_phone_video_keeps_its_rotation(tmp_path):
    src = tmp_path / "phone.mp4"
    make_clip(src, frames=3, rotation=90)
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "out", "--scale", "2")
    assert code == 0, stderr
    with av.open(str(tmp_path / "out" / "phone.mp4")) as c:
        frame = next(c.decode(c.streams.video[0]))
        assert (frame.rotation, frame.width, frame.height) == (90, 128, 96)


def test_bad_videos_are_one_error_line_each_and_the_batch_goes_on(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "good.mp4", frames=4)
    whole = (src / "good.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (src / "text.mp4").write_bytes(b"not a video at all\n" * 10)
    (src / "damaged.mp4").write_bytes(whole[:1200] + bytes(600) + whole[1800:])
    make_clip(tmp_path / "audio_source.mkv", frames=2, audio=True)
    with av.open(str(tmp_path / "audio_source.mkv")) as c, av.open(str(src / "audio_only.mka"), "w") as o:
        a = o.add_stream_from_template(c.streams.audio[0])
        for p in c.demux(c.streams.audio[0]):
            if p.size:
                p.stream = a
                o.mux(p)
    (src / "audio_only.mkv").write_bytes((src / "audio_only.mka").read_bytes())
    (src / "audio_only.mka").unlink()
    Image.fromarray(clip_frame(0, 20, 20)).save(src / "photo.png")
    code, stdout, stderr = run("--json", "--device", "cpu", "upscale", src, tmp_path / "out", "--scale", "2")
    assert code == 123
    summary = json.loads(stdout)
    failed = {Path(e["path"]).name: e["reason"] for e in summary["errors"]}
    assert set(failed) == {"truncated.mp4", "text.mp4", "audio_only.mkv", "damaged.mp4"}, failed
    assert "no video stream" in failed["audio_only.mkv"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.mp4", "photo.png"]
    for line in stderr.splitlines():
        if line.startswith("error:"):
            assert line.count("\n") == 0


def test_without_pyav_a_video_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import pixbatch.io.video as video

    make_clip(tmp_path / "clip.mp4", frames=2)

    def missing():
        raise video.VideoError(video.MISSING)

    monkeypatch.setattr(video, "require_av", missing)
    code, _, stderr = run("--device", "cpu", "upscale", tmp_path / "clip.mp4", tmp_path / "out", "--scale", "2")
    assert code == 123 and "pip install 'pixbatch[video]'" in stderr


def test_videos_are_recognised_by_content_and_audio_files_are_not(tmp_path):
    from pixbatch.io.video import sniff_video

    make_clip(tmp_path / "clip.mp4", frames=2)
    make_clip(tmp_path / "clip.mkv", frames=2)
    assert sniff_video(tmp_path / "clip.mp4") and sniff_video(tmp_path / "clip.mkv")
    Image.fromarray(clip_frame(0, 8, 8)).save(tmp_path / "a.png")
    assert not sniff_video(tmp_path / "a.png")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "camera_dump").write_bytes((tmp_path / "clip.mp4").read_bytes())  # no suffix at all
    (folder / "notes.txt").write_text("hello")
    code, stdout, stderr = run("--json", "--device", "cpu", "upscale", folder, tmp_path / "out", "--scale", "2")
    assert code == 0, stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["camera_dump.mkv"]


def test_segments_join_into_one_video_with_every_frame_and_nothing_left_beside_it(tmp_path):
    """Encoded in segments of 4 frames (each starts on a keyframe), joined by stream copy: the same frames,
    times and audio as one segment gives, and the parts folder gone once the video is committed."""
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=14, vfr=True, audio=True)
    for folder, frames in (("one", 250), ("four", 4)):
        code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / folder, "--scale", "2", "--codec", "ffv1",
                              "--segment-frames", frames)
        assert code == 0, stderr
        assert [p.name for p in (tmp_path / folder).iterdir()] == ["clip.mkv"]  # no parts, no temporary file
    one, four = streams(tmp_path / "one" / "clip.mkv"), streams(tmp_path / "four" / "clip.mkv")
    assert four["pts"] == one["pts"] and four["packets"] == one["packets"] and len(four["frames"]) == 14
    assert all(np.array_equal(a, b) for a, b in zip(four["frames"], one["frames"]))


DIE_AT_FRAME = """
import os, signal, sys
from pixbatch.tasks import upscale
seen = [0]
post = upscale.UpscaleTask.post
def post_and_die(self, y, meta, rows):
    seen[0] += 1
    if seen[0] == {frame}:
        os.kill(os.getpid(), signal.{signal})
    return post(self, y, meta, rows)
upscale.UpscaleTask.post = post_and_die
from pixbatch.cli import main
sys.argv = ['pixbatch', *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_an_interrupted_or_killed_video_resumes_after_its_last_segment(tmp_path, signal_name):
    """Ctrl-C, SIGTERM and kill -9 at frame 20 of 24 (segments of 3 frames; with up to 9 frames queued for the
    encoder, at least two segments are then finished): the rerun resumes after a finished segment and its
    output holds exactly the frames of an uninterrupted run (FFV1: deterministic)."""
    import subprocess
    import sys

    src = tmp_path / "clip.mp4"
    make_clip(src, frames=24, audio=True)
    args = ["--device", "cpu", "-v", "upscale", str(src), str(tmp_path / "out"), "--scale", "2", "--codec", "ffv1",
            "--segment-frames", "3", "--batch-size", "1"]
    proc = subprocess.run([sys.executable, "-c", DIE_AT_FRAME.format(frame=20, signal=signal_name), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and not (tmp_path / "out" / "clip.mkv").exists(), proc.stderr
    parts = tmp_path / "out" / ".clip.mkv.pixbatch-parts"
    assert parts.is_dir() and len(json.loads((parts / "manifest.json").read_text())["segments"]) >= 2
    code, _, stderr = run(*args)
    assert code == 0, stderr
    resumed = int(stderr.split("resuming after frame ")[1].split()[0])
    assert resumed >= 5 and (resumed + 1) % 3 == 0, stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip.mkv"]
    code, _, stderr = run(*args[:5], str(tmp_path / "whole"), *args[6:])
    assert code == 0, stderr
    resumed_run, whole = streams(tmp_path / "out" / "clip.mkv"), streams(tmp_path / "whole" / "clip.mkv")
    assert resumed_run["pts"] == whole["pts"] and len(whole["pts"]) == 24
    assert resumed_run["packets"] == whole["packets"]
    assert all(np.array_equal(a, b) for a, b in zip(resumed_run["frames"], whole["frames"]))


def test_a_video_that_fails_leaves_no_segments(tmp_path):
    """A frame that cannot be decoded fails the video: its finished segments are removed with it."""
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "clip.mp4", frames=24)
    whole = (src / "clip.mp4").read_bytes()
    (src / "clip.mp4").write_bytes(whole[: int(len(whole) * 0.8)] + bytes(200) + whole[int(len(whole) * 0.8) + 200:])
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "out", "--scale", "2",
                          "--segment-frames", "2")
    assert code == 123 and "error:" in stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_stylizing_a_video_and_segment_probabilities_refused_for_it(tmp_path, style_checkpoint):
    src = tmp_path / "clip.mov"
    make_clip(src, frames=5, audio=True)
    code, _, stderr = run("--device", "cpu", "stylize", src, tmp_path / "out", "--style", style_checkpoint)
    assert code == 0, stderr
    out = streams(tmp_path / "out" / "clip.mov")
    assert len(out["frames"]) == 5 and out["pts"] == streams(src)["pts"] and out["video"]["size"] == (64, 48)
    code, _, stderr = run("--device", "cpu", "segment", src, tmp_path / "seg", "--probabilities")
    assert code == 123 and "prob output is not written for videos" in stderr


def test_start_and_duration_cut_every_stream_by_one_rule(tmp_path):
    """--start 0.1 --duration 0.2 on a 30 fps-ish clip: the frames, audio and subtitle packets that start in
    [0.1, 0.3) s, every time moved back by 0.1 s; the frames are the same pictures as the uncut run's."""
    src = tmp_path / "clip.mkv"
    pts = make_clip(src, frames=14, audio=True, subtitles=True)
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "cut", "--scale", "2", "--codec", "ffv1",
                          "--start", "0.1", "--duration", "0.2")
    assert code == 0, stderr
    code, _, stderr = run("--device", "cpu", "upscale", src, tmp_path / "whole", "--scale", "2", "--codec", "ffv1")
    assert code == 0, stderr
    cut, whole, before = streams(tmp_path / "cut" / "clip.mkv"), streams(tmp_path / "whole" / "clip.mkv"), streams(src)
    kept = [i for i, p in enumerate(pts) if 100 <= p < 300]
    assert cut["pts"] == [round(pts[i] / 1000 - 0.1, 6) for i in kept]
    assert all(np.array_equal(cut["frames"][k], whole["frames"][i]) for k, i in enumerate(kept))
    for key, packets in before["packets"].items():
        expected = [(h, round(t - 0.1, 6)) for h, t in packets if 0.1 <= t < 0.3]
        assert cut["packets"].get(key, []) == expected, key


def test_a_dst_that_names_a_video_file_is_the_output(tmp_path, tiny_checkpoint):
    """`upscale clip.mp4 out/named.mkv` writes that file, in Matroska; a container that cannot hold the codec,
    several inputs, and a command that writes several files per video are usage errors (exit 2)."""
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=6)
    code, _, stderr = run("upscale", src, tmp_path / "out" / "named.mkv", "--model", tiny_checkpoint)
    assert code == 0, stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["named.mkv"]
    with av.open(str(tmp_path / "out" / "named.mkv")) as c:
        assert c.format.name.startswith("matroska") and sum(1 for _ in c.decode(video=0)) == 6
    for args, says in ((["upscale", src, tmp_path / "o.webm"], "cannot hold h264 video"),
                       (["upscale", src, src, tmp_path / "o.mp4"], "give one video as SRC"),
                       (["segment", src, tmp_path / "o.mkv"], "writes several files per video")):
        code, _, stderr = run(*args, "--model", tiny_checkpoint)
        assert code == 2 and says in stderr, (args, stderr)


def test_frames_as_images_are_the_frames_the_image_path_computes(tmp_path):
    """--format png: a folder `clip/` of `clip_000000.png`... holding each frame as `pixbatch upscale` computes
    the same frame given as an image; 10-bit frames are 16-bit PNGs; --codec with it is a usage error."""
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=7, audio=True)
    common = ["--device", "cpu", "upscale", "--scale", "2", "--precision", "fp32"]
    code, _, stderr = run(*common[:3], src, tmp_path / "out", *common[3:], "--format", "png", "--segment-frames", "3")
    assert code == 0, stderr
    names = sorted(p.name for p in (tmp_path / "out" / "clip").iterdir())
    assert names == [f"clip_{i:06d}.png" for i in range(7)] and list((tmp_path / "out").iterdir()) == [
        tmp_path / "out" / "clip"]
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, pixels in enumerate(streams(src)["frames"]):
        Image.fromarray(pixels).save(frames / f"clip_{i:06d}.png")
    code, _, stderr = run(*common[:3], frames, tmp_path / "images", *common[3:])
    assert code == 0, stderr
    for name in names:
        a = np.asarray(Image.open(tmp_path / "out" / "clip" / name)).astype(int)
        b = np.asarray(Image.open(tmp_path / "images" / name)).astype(int)
        assert a.shape == (96, 128, 3) and np.abs(a - b).max() <= 1, name
    deep = tmp_path / "deep.mkv"
    make_clip(deep, frames=3, bits=10, codec="libx265")
    code, _, stderr = run(*common[:3], deep, tmp_path / "deep", *common[3:], "--format", "png")
    assert code == 0, stderr
    assert (tmp_path / "deep" / "deep" / "deep_000002.png").read_bytes()[24] == 16  # IHDR bit depth
    code, _, stderr = run(*common[:3], src, tmp_path / "x", *common[3:], "--format", "png", "--codec", "h265")
    assert code == 2 and "--format png writes a video's frames as images" in stderr


def test_frames_as_images_resume_after_a_kill(tmp_path):
    """kill -9 at frame 20 of 24 with --format tiff: the rerun resumes after a finished segment, and the folder
    holds the 24 frames of an uninterrupted run, byte for byte."""
    import subprocess
    import sys

    src = tmp_path / "clip.mp4"
    make_clip(src, frames=24)
    args = ["--device", "cpu", "upscale", str(src), str(tmp_path / "out"), "--scale", "2", "--format", "tiff",
            "--segment-frames", "3", "--batch-size", "1", "-v"]
    proc = subprocess.run([sys.executable, "-c", DIE_AT_FRAME.format(frame=20, signal="SIGKILL"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and not (tmp_path / "out" / "clip").exists(), proc.stderr
    code, _, stderr = run(*args)
    assert code == 0 and "resuming after frame" in stderr, stderr
    code, _, stderr = run(*args[:4], str(tmp_path / "whole"), *args[5:])
    assert code == 0, stderr
    resumed, whole = sorted((tmp_path / "out" / "clip").iterdir()), sorted((tmp_path / "whole" / "clip").iterdir())
    assert [p.name for p in resumed] == [p.name for p in whole] and len(whole) == 24
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(resumed, whole))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip"]


def test_segment_writes_mask_frames_as_pngs(tmp_path):
    """segment --format png: folders of mask PNGs (and of overlays), each mask the one the frame gets as an
    image."""
    src = tmp_path / "clip.mkv"
    make_clip(src, frames=4)
    code, _, stderr = run("--device", "cpu", "segment", src, tmp_path / "out", "--format", "png", "--overlay",
                          "--precision", "fp32")
    assert code == 0, stderr
    masks = sorted((tmp_path / "out" / "clip").iterdir())
    overlays = sorted((tmp_path / "out" / "clip_overlay").iterdir())
    assert [p.name for p in masks] == [f"clip_{i:06d}.png" for i in range(4)] and len(overlays) == 4
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, pixels in enumerate(streams(src)["frames"]):
        Image.fromarray(pixels).save(frames / f"clip_{i:06d}.png")
    code, _, stderr = run("--device", "cpu", "segment", frames, tmp_path / "images", "--precision", "fp32")
    assert code == 0, stderr
    for path in masks:
        a, b = np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "images" / path.name))
        assert a.shape == b.shape == (48, 64) and (a != b).mean() < 0.005, path.name
