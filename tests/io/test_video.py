"""io/video.py: every common codec and container decodes; colours survive each matrix and range; untagged
and HDR streams follow their stated rules (clips made here with PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pixbatch.io.video import Colour, VideoError, VideoInfo, VideoReader, VideoWriter
from pixbatch.io.video_encoding import VideoEncoding
from tests.conftest import make_clip

av = pytest.importorskip("av")


def encode(path: Path, codec: str, pix_fmt: str, frames: int = 3, size=(64, 64), tags=None) -> None:
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=25)
        vs.width, vs.height, vs.pix_fmt = size[1], size[0], pix_fmt
        if tags:
            cc = vs.codec_context
            cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = tags
        for i in range(frames):
            img = np.full((*size, 3), (40 * i + 30, 120, 200 - 30 * i), np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
            f.pts = i
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))


@pytest.mark.parametrize(("name", "codec", "pix_fmt"), [
    ("h264.mp4", "libx264", "yuv420p"), ("h265.mkv", "libx265", "yuv420p"), ("vp9.webm", "libvpx-vp9", "yuv420p"),
    ("av1.mkv", "libsvtav1", "yuv420p"), ("prores.mov", "prores_ks", "yuv422p10le"),
    ("mpeg2.mpg", "mpeg2video", "yuv420p"), ("h264.avi", "libx264", "yuv420p")])
def test_common_codecs_and_containers_decode_every_frame(tmp_path, name, codec, pix_fmt):
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {codec}")
    encode(tmp_path / name, codec, pix_fmt)
    reader = VideoReader(tmp_path / name)
    try:
        frames = list(reader.frames())
    finally:
        reader.close()
    assert len(frames) == 3 and frames[0][0].shape == (64, 64, 3)
    assert reader.info.bits == (16 if "10" in pix_fmt else 8)
    red = frames[1][0][32, 32, 0] / (257 if reader.info.bits == 16 else 1)
    assert abs(red - 70) <= 6  # the colour of frame 1, through a lossy codec


BARS = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0],
                 [0, 0, 255], [0, 0, 0], [128, 128, 128], [200, 60, 30]], np.uint8)


@pytest.mark.parametrize("matrix", [6, 1, 9])  # BT.601, BT.709, BT.2020 (FFmpeg's numbers)
@pytest.mark.parametrize("colour_range", [1, 2])  # limited, full
def test_colour_bars_survive_each_matrix_and_range(tmp_path, matrix, colour_range):
    """Colour bars written by VideoWriter (4:4:4, lossless FFV1) with a matrix and range, read back by
    VideoReader: within 2 levels of 255, and the tags are the ones written. The luma written is checked
    against the matrix's own formula, so a writer and reader that agreed on a wrong matrix would fail."""
    bars = np.repeat(np.repeat(BARS[None], 8, axis=0), 8, axis=1)  # 8 x 80 px
    colour = Colour(matrix, colour_range, {6: 6, 1: 1, 9: 9}[matrix], {6: 6, 1: 1, 9: 14}[matrix])
    info = VideoInfo(80, 8, 0, Fraction(1, 25), Fraction(25), 8, "rawvideo", colour, None)
    writer = VideoWriter(tmp_path / "bars.mkv", "matroska", 80, 8, 3, 8, info, "ffv1", VideoEncoding())
    writer.write(bars, 0)
    writer.close()
    reader = VideoReader(tmp_path / "bars.mkv")
    (back, _), = list(reader.frames())
    reader.close()
    c = reader.info.colour
    assert (c.matrix, c.range, c.primaries) == (matrix, colour_range, colour.primaries)
    assert np.abs(back.astype(int) - bars).max() <= 2
    kr, kb = {6: (0.299, 0.114), 1: (0.2126, 0.0722), 9: (0.2627, 0.0593)}[matrix]
    rgb = BARS.astype(np.float64) / 255
    y = kr * rgb[:, 0] + (1 - kr - kb) * rgb[:, 1] + kb * rgb[:, 2]
    y = 16 + 219 * y if colour_range == 1 else 255 * y
    with av.open(str(tmp_path / "bars.mkv")) as f:
        frame = next(f.decode(f.streams.video[0]))
        plane = np.frombuffer(frame.planes[0], np.uint8).reshape(8, -1)[:, :80]
    assert np.abs(plane[4, 4::8].astype(float) - y).max() <= 1


def test_untagged_streams_follow_the_rule_or_the_option(tmp_path):
    make_clip(tmp_path / "sd.mp4", frames=2, colorspace=None)
    reader = VideoReader(tmp_path / "sd.mp4")
    reader.close()
    assert reader.info.colour.matrix == 6  # under 720 lines: BT.601
    reader = VideoReader(tmp_path / "sd.mp4", untagged="bt709")
    reader.close()
    assert (reader.info.colour.matrix, reader.info.colour.primaries) == (1, 1)


def test_hdr_is_refused_in_one_line(tmp_path):
    encode(tmp_path / "pq.mkv", "libx265", "yuv420p10le", tags=(9, 1, 9, 16))
    with pytest.raises(VideoError, match=r"is HDR \(PQ\)"):
        VideoReader(tmp_path / "pq.mkv")


def test_damage_ffmpeg_only_logs_fails_the_video_unless_the_log_is_off(tmp_path):
    """Bytes of an FFV1 frame's slice changed: FFmpeg decodes every frame and says so only in its log (slice CRC
    mismatch). That fails the video; with PIXBATCH_FFMPEG_LOG=off (PyAV's log callback left off) it does not."""
    import os
    import subprocess
    import sys

    import av

    from tests.conftest import REPO

    clip = tmp_path / "clip.mkv"
    make_clip(clip, frames=6, codec="ffv1")
    with av.open(str(clip)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    pos, size = packets[3]
    data = bytearray(clip.read_bytes())
    for i in range(pos + size // 2, pos + size // 2 + 8):
        data[i] ^= 0x5A
    clip.write_bytes(bytes(data))
    read = ("import sys; from pathlib import Path; from pixbatch.io.video import VideoReader, VideoError\n"
            "try:\n    print(sum(1 for _ in VideoReader(Path(sys.argv[1])).frames()))\n"
            "except VideoError as exc:\n    print('error:', exc)")
    seen = {}
    for log in ("on", "off"):
        env = {**os.environ, "PYTHONPATH": str(REPO), "PIXBATCH_FFMPEG_LOG": log}
        seen[log] = subprocess.run([sys.executable, "-c", read, str(clip)], capture_output=True, text=True,
                                   env=env, timeout=120).stdout.strip()
    assert seen["on"].startswith("error: damaged data by frame") and "ffv1" in seen["on"], seen
    assert seen["off"] == "6", seen


def test_a_reader_closed_mid_video_frees_its_busy_decoder_threads(tmp_path):
    """A damaged H.264 clip read a frame or two, then closed and dropped while its frame threads still
    decode (and log): 300 times in a child process, which must end. Freeing a decoder whose threads wait
    to log deadlocked within ~50 such readers before ``close`` let them finish."""
    import subprocess
    import sys

    make_clip(tmp_path / "long.mp4", frames=90, size=(240, 320))
    data = bytearray((tmp_path / "long.mp4").read_bytes())
    for offset in range(2000, len(data) - 2000, 3000):
        data[offset:offset + 300] = bytes(300)
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    read = ("import gc, sys; from pathlib import Path; from pixbatch.io.video import VideoReader, VideoError\n"
            "for i in range(300):\n"
            "    reader = VideoReader(Path(sys.argv[1])); frames = reader.frames()\n"
            "    try:\n        for _ in range(1 + i % 3): next(frames)\n"
            "    except (VideoError, StopIteration) as exc:\n        exc.cycle = exc  # freed later, by gc\n"
            "    reader.close(); del frames, reader\n"
            "gc.collect(); print('ended')")
    done = subprocess.run([sys.executable, "-c", read, str(tmp_path / "damaged.mp4")], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "ended", done.stderr[-2000:]
