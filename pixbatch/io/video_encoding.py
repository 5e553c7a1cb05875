"""How pixbatch encodes video outputs, in plain Python (no PyAV needed): the codecs and the containers each
fits, the quality defaults and encoder options, the pixel formats, the --start/--duration window, and the
keyframe spans --ray splits a video into. io/video.py reads and writes the files."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

# --codec: FFmpeg's encoder for each name
CODECS = {"h264": "libx264", "h265": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9", "ffv1": "ffv1",
          "prores": "prores_ks"}
# the containers each codec is written into as is; anything else goes to Matroska (.mkv), which takes all
FITS = {".mp4": {"h264", "h265", "av1", "vp9"}, ".m4v": {"h264", "h265"}, ".mov": {"h264", "h265", "prores"},
        ".mkv": set(CODECS), ".webm": {"vp9", "av1"}, ".avi": {"h264", "ffv1"}, ".ts": {"h264", "h265"},
        ".mts": {"h264", "h265"}, ".m2ts": {"h264", "h265"}}
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
           ".ts": "mpegts", ".mts": "mpegts", ".m2ts": "mpegts"}
# quality defaults per encoder: visually lossless for pictures (x264 crf 18 is the usual threshold)
DEFAULT_CRF = {"h264": 18, "h265": 20, "av1": 24, "vp9": 20}
DEFAULT_PRESET = {"h264": "medium", "h265": "medium", "av1": "8"}


@dataclass(frozen=True)
class VideoEncoding:
    """How output videos are encoded (--codec, --crf, --bitrate, --preset, --pix-fmt); None: the default
    for what is written (pictures: H.264 crf 18, or the input's container's own codec; masks: FFV1)."""

    codec: str | None = None
    crf: int | None = None
    bitrate: str | None = None  # e.g. "8M": constant bit rate instead of crf
    preset: str | None = None
    pix_fmt: str | None = None
    segment_frames: int = 250  # input frames per segment: what an interrupted run resumes after
    start: float = 0.0  # --start: seconds of the input skipped (a preview); see ``in_window``
    duration: float | None = None  # --duration: seconds kept from --start (None: to the end)
    untagged: str = "auto"  # the matrix of streams with no colour tags: auto (BT.709 from 720 lines), bt601, ...
    frames: str = ""  # --format png|tiff|jpg|webp: the frames as image files of this suffix in a folder, not a video


@dataclass(frozen=True)
class Span:
    """Part ``index`` of ``count`` of a video split at keyframes (--ray runs the parts on several workers): its
    ``frames`` frames have pts in [lo, hi) (hi None: to the end), the first being frame ``first`` of the
    video. Each part starts on a keyframe that no later frame needs an earlier picture to decode."""

    index: int
    count: int
    first: int
    frames: int
    lo: int
    hi: int | None


def output_suffix(src_suffix: str, codec: str) -> str:
    """The container of an output: the input's when ``codec`` can be written into it, else Matroska."""
    suffix = src_suffix.lower()
    return suffix if codec in FITS.get(suffix, ()) else ".mkv"


def picture_codec(src_suffix: str, encoding: VideoEncoding) -> str:
    """The codec of a picture output: --codec, else H.264 (VP9 for WebM, whose containers take no H.264)."""
    return encoding.codec or ("vp9" if src_suffix.lower() == ".webm" else "h264")


def in_window(ts: int, time_base: Fraction, encoding: VideoEncoding) -> bool:
    """The cutting rule of --start/--duration, for video frames and for the packets of every other stream
    alike: kept when its own start time t (pts x time base) has start <= t < start + duration."""
    t = ts * time_base
    start = Fraction(str(encoding.start))
    return t >= start and (encoding.duration is None or t < start + Fraction(str(encoding.duration)))


def shift(time_base: Fraction, encoding: VideoEncoding) -> int:
    """Ticks (in ``time_base``) every kept timestamp moves back by, so the output starts at --start's 0."""
    return round(Fraction(str(encoding.start)) / time_base) if encoding.start else 0


def main_codec(mask: bool, src_suffix: str, encoding: VideoEncoding) -> str:
    """The codec of a video job's main output: --codec, else lossless FFV1 for masks, else the picture codec."""
    return encoding.codec or ("ffv1" if mask else picture_codec(src_suffix, encoding))


def main_suffix(mask: bool, src_suffix: str, encoding: VideoEncoding) -> str:
    """The suffix planning gives a video job's main output: its codec's container (none for a folder of
    frames)."""
    return "" if encoding.frames else output_suffix(src_suffix, main_codec(mask, src_suffix, encoding))


def pix_fmt(codec: str, width: int, height: int, bits: int, mask: bool) -> str:
    """4:2:0 (8 or 10 bits) where the sizes are even; odd sizes (x3 of an odd input, --outscale) are
    written 4:4:4, as 4:2:0 needs even sizes and pixbatch never pads or crops a frame silently."""
    if codec == "ffv1":
        return ("gray" if bits == 8 else "gray16le") if mask else ("yuv444p" if bits == 8 else "yuv444p10le")
    if codec == "prores":
        return "yuv444p10le" if width % 2 or height % 2 else "yuv422p10le"
    sub = "444" if mask or width % 2 or height % 2 else "420"
    return f"yuv{sub}p" + ("" if bits == 8 else "10le")


def encoder_options(codec: str, encoding: VideoEncoding) -> dict[str, str]:
    """FFmpeg's encoder options for ``codec``: constant quality (crf) unless --bitrate, the preset, and
    what each encoder needs besides (FFV1's slice checksums, ProRes 422 HQ)."""
    opts: dict[str, str] = {}
    if codec in DEFAULT_CRF:
        if encoding.bitrate:
            opts["b"] = str(encoding.bitrate)
        else:
            opts["crf"] = str(encoding.crf if encoding.crf is not None else DEFAULT_CRF[codec])
            if codec == "vp9":
                opts["b"] = "0"  # constant quality
        preset = encoding.preset or DEFAULT_PRESET.get(codec)
        if preset is not None:
            opts["preset" if codec != "vp9" else "deadline"] = preset
    if codec == "h265":
        opts["x265-params"] = "log-level=error"
    if codec == "ffv1":
        opts.update(level="3", slicecrc="1")
    if codec == "prores":
        opts["profile"] = "3"  # 422 HQ
    return opts
