"""The finished segments of a video's outputs, kept beside the destination until the video is whole: what a
killed or interrupted run resumes from.

Each output of a video is encoded in segments of ``--segment-frames`` input frames, each segment a file of
its own (so it starts on a keyframe). A segment's files are renamed into ``.NAME.pixbatch-parts/`` (beside
the destination ``NAME``) once complete, and the manifest there is rewritten atomically to list it, with
the frames and timestamps it covers. The folder is not a temporary file: the stale-temp cleanup never
removes it. A run that finds it with the same source (size and modification time) and the same settings
resumes after its last segment; otherwise it starts again (and clears it). The folder is removed when the
video is committed, or when it fails. ``assemble`` joins the segments into the output file."""

from __future__ import annotations

import heapq
import itertools
import json
import os
import shutil
from bisect import bisect_left
from dataclasses import asdict
from pathlib import Path

from pixbatch.io.atomic import remove, write_bytes
from pixbatch.io.decode import ImageMeta
from pixbatch.io.encode import FORMATS, encode_image
from pixbatch.io.video import VideoError, reason, require_av
from pixbatch.io.video_encoding import Span, VideoEncoding, in_window, shift

MANIFEST = "manifest.json"


def parts_folder(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.pixbatch-parts"


def remove_parts(dst: Path) -> None:
    """Remove every finished segment of ``dst``'s video, its spans' included."""
    shutil.rmtree(parts_folder(dst), ignore_errors=True)


class Parts:
    """The finished segments of a video's outputs, or of one ``span`` of them (then in a folder of its own
    inside the video's, so that the spans of a split video run at once)."""

    def __init__(self, dst: Path, source: Path, settings: dict, span: Span | None = None) -> None:
        self.folder = parts_folder(dst) / f"span-{span.index:04d}" if span else parts_folder(dst)
        self.first = span.first if span else 0  # the video's number of the first frame here
        st = os.stat(source)
        self.key = {"source": {"size": st.st_size, "mtime_ns": st.st_mtime_ns}, "settings": settings,
                    **({"span": asdict(span)} if span else {})}
        self.segments: list[dict] = []

    def resume(self) -> int:
        """Load the segments an earlier run finished for the same source and settings; the frames they
        cover (0 when there is nothing to resume, and then anything left there is removed)."""
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("key") != self.key or not all(
                (self.folder / f).exists() for s in manifest.get("segments", []) for f in s["files"].values()):
            self.remove()
            return 0
        self.segments = manifest["segments"]
        listed = {f for s in self.segments for f in s["files"].values()} | {MANIFEST}
        for path in self.folder.iterdir():  # a segment the killed run had not finished
            if path.name not in listed:
                remove(path)
        return self.frames

    def load(self) -> int:
        """Load the segments listed in the folder, whatever settings made them (a split video's spans, once
        all have run); the frames they cover. VideoError when a listed file is missing."""
        try:
            self.segments = json.loads((self.folder / MANIFEST).read_text())["segments"]
        except (OSError, ValueError, KeyError, TypeError):
            raise VideoError(f"the finished segments in {self.folder} cannot be read") from None
        if not all((self.folder / f).exists() for s in self.segments for f in s["files"].values()):
            raise VideoError(f"a finished segment in {self.folder} is missing")
        return self.frames

    @property
    def frames(self) -> int:
        return sum(s["frames"] for s in self.segments)

    def path(self, name: str, index: int, suffix: str) -> Path:
        """Where segment ``index`` of output ``name`` is kept once complete."""
        return self.folder / f"{name}.{index:05d}{suffix}"

    def add(self, files: dict[str, Path], frames: int, first_pts: int, last_pts: int) -> None:
        """Record a complete segment whose files are already in the folder."""
        self.segments.append({"frames": frames, "first_pts": first_pts, "last_pts": last_pts,
                              "files": {name: p.name for name, p in files.items()}})
        data = json.dumps({"key": self.key, "segments": self.segments}, indent=1).encode()
        write_bytes(data, self.folder / MANIFEST, overwrite=True)

    def files(self, name: str) -> list[Path]:
        return [self.folder / s["files"][name] for s in self.segments if name in s["files"]]

    @property
    def last_pts(self) -> int | None:
        return self.segments[-1]["last_pts"] if self.segments else None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.segments = []


def split_at_keyframes(path: Path, count: int, min_frames: int) -> list[Span]:
    """``split_packets`` on the packets of ``path``'s first video stream (read, not decoded)."""
    av = require_av()
    with av.open(str(path), metadata_errors="ignore") as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(container.streams.video[0]) if p.size]
    return split_packets(packets, count, min_frames)


def split_packets(packets: list[tuple[int | None, bool]], count: int, min_frames: int) -> list[Span]:
    """Up to ``count`` spans of about equal length, each starting on a keyframe and at least ``min_frames``
    long, that together hold every frame of a stream whose packets (pts, keyframe or not) are ``packets``
    in decode order; [] when it cannot be split (one span, packets without timestamps, no keyframe where
    one is needed). A keyframe is a start only when no packet after it (decode order) shows an earlier
    frame: the frames of a span then decode from it alone, as they do in a whole run (open-GOP leading
    pictures would not)."""
    pts = [t for t, _ in packets]
    if count < 2 or len(packets) < 2 * min_frames or None in pts or len(set(pts)) != len(pts):
        return []
    order = sorted(pts)  # presentation order
    later_min = list(itertools.accumulate(reversed(pts), min))[::-1]  # the earliest pts from each packet on
    starts = sorted({bisect_left(order, t) for i, (t, key) in enumerate(packets) if key and later_min[i] >= t})
    bounds = [0]
    for k in range(1, count):
        target = k * len(order) / count
        fits = [b for b in starts if b - bounds[-1] >= min_frames and len(order) - b >= min_frames]
        if fits:
            best = min(fits, key=lambda b: abs(b - target))
            if abs(best - target) < len(order) / count:  # not a second cut near the last one
                bounds.append(best)
    if len(bounds) < 2:
        return []
    ends = bounds[1:] + [len(order)]
    return [Span(index=i, count=len(bounds), first=a, frames=b - a, lo=order[a],
                 hi=order[b] if b < len(order) else None) for i, (a, b) in enumerate(zip(bounds, ends))]


class FramesWriter:
    """A segment of frames written as image files (--format png|tiff|jpg|webp) into a folder of its own,
    named ``STEM_NNNNNN.png`` by frame number; the interface of ``VideoWriter``."""

    def __init__(self, path: Path, stem: str, first: int, suffix: str, options) -> None:
        self.path, self.stem, self.index, self.suffix, self.options = path, stem, first, suffix, options
        path.mkdir(parents=True)

    def write(self, pixels, pts: int) -> None:
        mode = {1: "L", 3: "RGB"}[pixels.shape[2]]
        meta = ImageMeta(mode, 8 if pixels.dtype.itemsize == 1 else 16, "VIDEO")
        data = encode_image(pixels, meta, FORMATS[self.suffix], self.options)
        write_bytes(data, self.path / f"{self.stem}_{self.index:06d}{self.suffix}", overwrite=True)
        self.index += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def join_frames(parts: list[Path], out: Path, *, frames: int) -> None:
    """Move the frames of ``parts`` (segment folders, in order) into the new folder ``out``; VideoError unless
    it then holds ``frames`` files."""
    out.mkdir(parents=True)
    for part in parts:
        for path in sorted(part.iterdir()):
            os.rename(path, out / path.name)
    if (n := sum(1 for _ in out.iterdir())) != frames:
        raise VideoError(f"its frames folder holds {n} files, not its {frames} frames")


def _rotation(path: Path) -> int:
    """The display rotation of a file's first video stream (degrees counter-clockwise), read from its first
    frame in a container of its own (seeking back would skip packets with negative timestamps)."""
    av = require_av()
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            for frame in container.decode(container.streams.video[0]):
                return int(frame.rotation or 0)
    except Exception:
        return 0
    return 0


def assemble(parts: list[Path], source: Path, out: Path, fmt: str, *, frames: int,
             window: VideoEncoding | None = None) -> list[str]:
    """Write ``out`` (container ``fmt``): the encoded video of ``parts`` (segments of one stream, in order,
    ``frames`` frames together) in place of ``source``'s first video stream, and every other stream of
    ``source`` (audio, subtitles, data, other video) copied packet for packet, with the container's
    metadata and chapters. With ``window`` (--start/--duration) the other streams' packets and the chapters
    follow the frames' cutting rule (``in_window``) and move back as they do. Returns notes on streams the
    container cannot hold (left out)."""
    cut = window is not None and (window.start or window.duration is not None)
    av = require_av()
    notes: list[str] = []
    with av.open(str(parts[0])) as first, av.open(str(source), metadata_errors="ignore") as src, \
            av.open(str(out), "w", format=fmt) as dst:
        main = src.streams.video[0]
        mapping = {}
        for st in src.streams:
            template = first.streams.video[0] if st.index == main.index else st
            if st.index != main.index and st.codec_context is not None and \
                    st.codec_context.name not in dst.supported_codecs:
                notes.append(f"its {st.type} stream #{st.index} ({st.codec_context.name}) cannot be stored in "
                             f"{out.suffix or fmt} and was left out")
                continue
            try:
                ost = dst.add_stream_from_template(template)
            except (av.FFmpegError, ValueError) as exc:
                notes.append(f"its {st.type} stream #{st.index} was left out ({reason(exc)})")
                continue
            ost.metadata.update({k: v for k, v in st.metadata.items() if k.lower() not in ("encoder", "duration")})
            if st.index == main.index and (rotation := _rotation(source)):
                ost.set_display_rotation(rotation)  # a phone video shot upright stays upright
            mapping[st.index] = ost
        dst.metadata.update({k: v for k, v in src.metadata.items() if k.lower() != "encoder"})
        chapters = [c for c in src.chapters() if not cut or in_window(c["start"], c["time_base"], window)]
        if cut:
            chapters = [dict(c, start=c["start"] - shift(c["time_base"], window),
                             end=c["end"] - shift(c["time_base"], window)) for c in chapters]
        if chapters:
            dst.set_chapters(chapters)
        others = [s for s in src.streams if s.index != main.index and s.index in mapping]
        order = itertools.count()
        counted = [0]

        def encoded():
            for path in parts:
                with av.open(str(path)) as part:
                    for p in part.demux(part.streams.video[0]):
                        if p.size:
                            counted[0] += 1
                            yield p

        def timed(packets, stream_of, cutting: bool = False):
            for p in packets:
                if p.size == 0:  # the demuxer's end-of-stream markers
                    continue
                if cutting:
                    when = p.pts if p.pts is not None else p.dts
                    if when is None or not in_window(when, p.time_base, window):
                        continue
                    back = shift(p.time_base, window)
                    p.pts = None if p.pts is None else p.pts - back
                    p.dts = None if p.dts is None else p.dts - back
                ts = p.dts if p.dts is not None else p.pts
                seconds = float(ts * p.time_base) if ts is not None else float("-inf")
                yield seconds, next(order), p, stream_of(p)

        streams = [timed(encoded(), lambda p: mapping[main.index])]
        if others:
            streams.append(timed(src.demux(others), lambda p: mapping[p.stream.index], cutting=bool(cut)))
        for _, _, packet, stream in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
            packet.stream = stream
            dst.mux(packet)
    if counted[0] != frames:
        raise VideoError(f"its encoded segments hold {counted[0]} frames, not {frames}")
    return notes
