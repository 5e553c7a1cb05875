"""Video files through PyAV (the optional ``video`` extra): probe, decode frames to RGB, encode RGB frames,
and assemble the output with the input's other streams copied packet for packet.

No external program runs: PyAV's wheels carry FFmpeg. Colour: each frame is converted with its own matrix
and range (untagged streams: BT.709 from 720 lines up, else BT.601, as players assume), and the output is
tagged with what the input had (or was assumed to have). Sources above 8 bits decode to 16-bit RGB and are
written back at 10 bits. Timestamps: every output frame carries its input frame's pts in the input's time
base, so variable frame rates stay variable and the other streams stay in sync."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from pixbatch.io.video_encoding import CODECS, Span, VideoEncoding, encoder_options, in_window, pix_fmt, shift

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                            ".m2ts", ".wmv", ".flv", ".ogv"})
MISSING = "video files need PyAV: pip install 'pixbatch[video]'"

# FFmpeg's colour tags (AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic, AVColorRange)
UNSPECIFIED = 2
BT709, BT601 = 1, 6  # matrices (and the primaries/transfer of the same number)
LIMITED, FULL = 1, 2
MATRIX_NAMES = {1: "itu709", 5: "itu601", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}


class VideoError(ValueError):
    """A video that cannot be read or written; the message is the reason a user reads."""


def require_av():
    """PyAV, or VideoError saying which extra to install."""
    try:
        import av
    except ImportError:
        raise VideoError(MISSING) from None
    return av


# ISO-BMFF major brands of files that are audio or still images, not videos
NOT_VIDEO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis", b"crx "}


def sniff_video(path: Path) -> bool:
    """Whether a file's first bytes are those of a video container (ISO-BMFF/QuickTime, Matroska/WebM,
    AVI, MPEG-TS, MPEG-PS, FLV, ASF): how files with no known suffix are recognised, without PyAV."""
    try:
        with open(path, "rb") as f:
            head = f.read(400)
    except OSError:
        return False
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return head[8:12] not in NOT_VIDEO_BRANDS
    if len(head) >= 12 and head[4:8] in (b"moov", b"mdat", b"wide", b"free") and head[:4] != b"\0\0\0\0":
        return True  # QuickTime without a leading ftyp
    return (head[:4] == b"\x1a\x45\xdf\xa3"  # EBML: Matroska, WebM
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
            or (len(head) > 376 and head[0] == head[188] == head[376] == 0x47)  # MPEG-TS sync bytes
            or head[:4] == b"\0\0\x01\xba"  # MPEG-PS pack header
            or head[:3] == b"FLV"
            or head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"))  # ASF (WMV)


@dataclass(frozen=True)
class Colour:
    """The colour tags of a stream: matrix, range, primaries, transfer (FFmpeg's numbers)."""

    matrix: int
    range: int
    primaries: int
    transfer: int


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int  # as the container says (0: unknown); the frames decoded are what counts
    time_base: Fraction
    rate: Fraction | None  # average frame rate, when known
    bits: int  # bits per sample of the decoded pixels: 8, or 16 for deeper sources
    codec: str
    colour: Colour
    sar: Fraction | None


UNTAGGED = {"bt601": BT601, "bt709": BT709, "bt2020": 9}  # --untagged-matrix; auto: BT.709 from 720 lines
PRIMARIES_OF = {1: 1, 5: 5, 6: 6, 7: 7, 9: 9, 10: 9}  # an untagged stream's primaries and transfer, from its
TRANSFER_OF = {1: 1, 5: 6, 6: 6, 7: 7, 9: 14, 10: 14}  # matrix (FFmpeg's numbers)
HDR_TRANSFERS = {16: "PQ", 18: "HLG"}


def _colour(cc, height: int, untagged: str) -> Colour:
    """The stream's colour tags; what is untagged follows the rule (or --untagged-matrix)."""
    assumed = UNTAGGED.get(untagged, BT709 if height >= 720 else BT601)
    matrix = cc.colorspace if cc.colorspace in MATRIX_NAMES else assumed
    primaries = cc.color_primaries if cc.color_primaries not in (0, UNSPECIFIED) else PRIMARIES_OF[matrix]
    transfer = cc.color_trc if cc.color_trc not in (0, UNSPECIFIED) else TRANSFER_OF[matrix]
    return Colour(matrix, cc.color_range if cc.color_range in (LIMITED, FULL) else LIMITED, primaries, transfer)


class _FFmpegErrors(logging.Handler):
    """FFmpeg's error messages (from every thread, decoder threads included), numbered, so that a reader can
    ask which of its demuxer's and decoder's arrived since it started. FFmpeg conceals much damage (a
    checksum mismatch, a file that ends early) and says so only in its log: these messages are how a
    damaged input is told from a whole one. Nothing reaches the user's stderr."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[tuple[str, str]] = []  # (FFmpeg's component, message), the last KEEP of them
        self.count = 0  # messages ever seen

    KEEP = 256

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock:
            self.seen.append((record.name.removeprefix("libav."), record.getMessage().strip()))
            del self.seen[:-self.KEEP]
            self.count += 1

    def since(self, mark: int, sources: set[str]) -> str | None:
        """The first message of ``sources`` among those after the ``mark``-th; None when there is none."""
        with self.lock:
            new = self.seen[max(0, len(self.seen) - (self.count - mark)):]
        return next((f"{who}: {text}" for who, text in new if who in sources and text), None)


_errors: _FFmpegErrors | None = None
_errors_lock = threading.Lock()


def ffmpeg_errors() -> _FFmpegErrors:
    """The one handler of FFmpeg's log (installed on first use). PIXBATCH_FFMPEG_LOG=off leaves PyAV's log
    callback off (it has had deadlock reports: PyAV #751, #1133); damage is then found by the frame count and
    duration checks only."""
    global _errors
    with _errors_lock:
        if _errors is None:
            import av.logging

            _errors = _FFmpegErrors()
            logger = logging.getLogger("libav")
            logger.addHandler(_errors)
            logger.propagate = False
            if os.environ.get("PIXBATCH_FFMPEG_LOG", "on").lower() not in ("off", "0", "no"):
                av.logging.set_level(av.logging.ERROR)
    return _errors


def reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without the file name PyAV appends."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text[0].lower() + text[1:] if text else type(exc).__name__


class VideoReader:
    """The first video stream of a file, decoded frame by frame into RGB (uint8, or uint16 for sources
    above 8 bits), each with its pts. Several decoder threads (``thread_type`` AUTO)."""

    def __init__(self, path: Path, untagged: str = "auto") -> None:
        av = require_av()
        self.path = path
        self.log = ffmpeg_errors()
        self.mark = self.log.count
        self.closed = False
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise VideoError(f"cannot open as a video ({reason(exc)})") from None
        try:
            if not self.container.streams.video:
                kinds = sorted({s.type for s in self.container.streams}) or ["no streams"]
                raise VideoError(f"has no video stream ({', '.join(kinds)})")
            self.stream = self.container.streams.video[0]
            cc = self.stream.codec_context
            if cc is None or not cc.width or not cc.height:
                raise VideoError(f"cannot decode its video stream (codec {self.stream.codec_context.name if cc else '?'})")
            self.stream.thread_type = "AUTO"
            fmt = cc.format
            depth = max((c.bits for c in fmt.components), default=8) if fmt is not None else 8
            self.info = VideoInfo(
                width=cc.width, height=cc.height, frames=int(self.stream.frames or 0),
                time_base=self.stream.time_base or Fraction(1, 90000), rate=self.stream.average_rate,
                bits=8 if depth <= 8 else 16, codec=cc.name, colour=_colour(cc, cc.height, untagged),
                sar=cc.sample_aspect_ratio if cc.sample_aspect_ratio else None)
            if self.info.colour.transfer in HDR_TRANSFERS:
                raise VideoError(f"is HDR ({HDR_TRANSFERS[self.info.colour.transfer]}): not processed, as its "
                                 "mastering metadata would not be carried over (no silent SDR either)")
        except BaseException:
            self.container.close()
            raise

    def frames(self, skip: int = 0, last_pts: int | None = None, window: VideoEncoding | None = None,
               span: Span | None = None) -> Iterator[tuple[np.ndarray, int]]:
        """(RGB pixels, pts) of every frame in presentation order after the first ``skip`` (decoded, not
        converted; the last of them must have pts ``last_pts``, when given); VideoError on corrupt data, a
        change of size or an interlaced frame (the frame number said). With ``window`` (--start/--duration),
        only the frames in it, their pts moved back by ``shift``; with ``span``, only that part's frames."""
        av = require_av()
        info, n, last = self.info, 0, None
        cut = window is not None and (window.start or window.duration is not None)
        back = shift(info.time_base, window) if cut else 0
        if cut and window.start:  # from the keyframe before --start, not from the beginning
            self.container.seek(int(Fraction(str(window.start)) / info.time_base) + (self.stream.start_time or 0),
                                stream=self.stream, backward=True)
        if span is not None and span.index:
            self.container.seek(span.lo, stream=self.stream, backward=True)
        ended = False  # the span's last frame is out
        at = span.first if span is not None else 0  # frame numbers in messages are the video's
        fmt = "rgb24" if info.bits == 8 else "rgb48le"
        src = MATRIX_NAMES[info.colour.matrix]
        end = None if not cut or window.duration is None else (Fraction(str(window.start))
                                                                + Fraction(str(window.duration)))
        try:
            for packet in self.container.demux(self.stream):
                if ended or end is not None and last is not None and last * info.time_base >= end:
                    break  # past --duration or the span: nothing later is kept
                for frame in packet.decode():
                    if (frame.width, frame.height) != (info.width, info.height):
                        raise VideoError(f"frame {at + n} is {frame.width}x{frame.height}, not {info.width}x"
                                         f"{info.height}: resolution changes are not supported")
                    if frame.is_corrupt:
                        raise VideoError(f"frame {at + n} is damaged (its data could not be decoded whole)")
                    if self.log.count != self.mark:
                        self._check_log(at + n)
                    if frame.interlaced_frame:
                        raise VideoError(f"frame {at + n} is interlaced: deinterlace it first (pixbatch does not)")
                    pts = frame.pts if frame.pts is not None else (last + 1 if last is not None else 0)
                    last = pts
                    if span is not None:
                        if span.hi is not None and pts >= span.hi:
                            ended = True
                            break
                        if pts < span.lo:  # a seek lands on the keyframe before
                            continue
                    if cut:
                        if not in_window(pts, info.time_base, window):
                            continue
                        pts -= back
                    n += 1
                    if n <= skip:
                        if n == skip and last_pts is not None and pts != last_pts:
                            raise VideoError(f"frame {at + n - 1} is not the one its finished segments end with: run "
                                             "it again (it starts over)")
                        continue
                    yield frame.to_ndarray(format=fmt, src_colorspace=src, src_color_range=info.colour.range), pts
            self._check_log(at + n)
            if span is not None:
                if n != span.frames:
                    raise VideoError(f"part {span.index + 1} of {span.count} has {n} frames, not {span.frames} "
                                     "(damaged or cut short)")
                return
            if n == 0:
                raise VideoError("no frames in --start/--duration's range" if cut else "its video stream has no frames")
            if info.frames and n < info.frames and not cut:  # the index counts frames the data did not hold
                raise VideoError(f"only {n} of its {info.frames} frames could be decoded (damaged or cut short)")
            if not info.frames and not cut and last is not None:
                self._check_duration(n, last)
        except av.FFmpegError as exc:
            self.close()
            raise VideoError(f"cannot decode frame {at + n} ({reason(exc)})") from None
        except VideoError:
            self.close()  # a damaged video's decoder threads may still be busy: let them finish now (see close)
            raise

    def _check_log(self, n: int) -> None:
        """VideoError when the demuxer or the decoder logged an error since this reader opened the file."""
        sources = {self.container.format.name, self.stream.codec_context.name}
        if (message := self.log.since(self.mark, sources)) is not None:
            raise VideoError(f"damaged data by frame {n} ({message[:160]})")

    def _check_duration(self, n: int, last: int) -> None:
        """VideoError when the frames end well before the duration the container states (a file cut short
        at a cluster boundary, which FFmpeg reads without a word): the video stream's own duration, or the
        file's when the video is its only stream; "well" is three frame intervals."""
        info, stream = self.info, self.stream
        start = (stream.start_time or 0) * info.time_base
        if stream.duration:
            stated = stream.duration * info.time_base
        elif len(self.container.streams) == 1 and self.container.duration:
            stated = Fraction(self.container.duration, 1_000_000) - start
        else:
            return
        interval = 1 / info.rate if info.rate else Fraction(1, 30)
        ended = last * info.time_base - start + interval
        if stated - ended > 3 * interval:
            raise VideoError(f"its frames end at {float(ended):.3f} s, before the {float(stated):.3f} s it states "
                             f"(cut short after frame {n - 1})")

    def close(self) -> None:
        """Close the file, first letting the decoder's threads finish what they hold (without the GIL, so
        that they can log): freeing a decoder whose threads are still busy waits for them while holding the
        GIL, and one that logs needs the GIL, a deadlock (seen when a damaged video's decoder was freed, also
        at the exit of a process that never closed its reader). ``frames`` closes the reader when it raises
        VideoError; closing twice is harmless."""
        if self.closed:
            return
        self.closed = True
        self.stream.codec_context.flush_buffers()
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Encodes RGB (or 1-channel mask) frames, each with its pts in ``info``'s time base, into a video-only
    file in container ``fmt``; ``assemble`` adds the input's other streams."""

    def __init__(self, path: Path, fmt: str, width: int, height: int, channels: int, bits: int, info: VideoInfo,
                 codec: str, encoding: VideoEncoding) -> None:
        av = require_av()
        self.path, self.info, self.bits = path, info, bits
        self.mask = channels == 1
        self.container = av.open(str(path), "w", format=fmt)
        try:
            stream = self.container.add_stream(CODECS[codec], rate=info.rate or Fraction(25))
            stream.width, stream.height = width, height
            stream.pix_fmt = self.pix_fmt = encoding.pix_fmt or pix_fmt(codec, width, height, bits, self.mask)
            stream.time_base = info.time_base
            cc = stream.codec_context
            cc.time_base = info.time_base
            if info.sar:
                cc.sample_aspect_ratio = info.sar
            if not self.mask:
                c = info.colour
                cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = c.matrix, c.range, c.primaries, c.transfer
            stream.options = encoder_options(codec, encoding)
            if codec in ("h264", "h265"):
                cc.thread_count = 0
            self.stream = stream
        except BaseException:
            self.container.close()
            path.unlink(missing_ok=True)
            raise

    def write(self, pixels: np.ndarray, pts: int) -> None:
        av = require_av()
        fmt = ("gray" if self.bits == 8 else "gray16le") if self.mask else ("rgb24" if self.bits == 8 else "rgb48le")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[..., 0] if self.mask else pixels), format=fmt)
        if self.mask:
            frame = frame.reformat(format=self.pix_fmt)
        else:
            c = self.info.colour
            frame = frame.reformat(format=self.pix_fmt, dst_colorspace=MATRIX_NAMES[c.matrix], dst_color_range=c.range)
        frame.pts, frame.time_base = pts, self.info.time_base
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass
        self.path.unlink(missing_ok=True)
