"""Video jobs on the one engine: a video file is a source of frames and a sink of encoded frames.

Frames are decoded ahead of the model by a reader thread (PyAV, several decoder threads), each run
through the WindowEngine as an image of its own (frames batch together; a frame too large for the
memory budget is tiled with the usual windows and out-of-memory back-off), and handed in order to an
encoder thread. Each output is encoded into a temporary video-only file, assembled with the input's other
streams (stream copy) into a temporary file of its own container, and committed (renamed into place)
only when whole: the main output last. With --format png|tiff|jpg|webp the frames are written as images
instead, a folder per segment, joined into one folder that is renamed into place when whole. A frame that
fails fails the video, saying its number, and nothing of that video remains."""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pixbatch.io.atomic import OutputExistsError, commit, commit_folder, remove, temp_path
from pixbatch.io.decode import ImageMeta
from pixbatch.io.discover import Job
from pixbatch.io.encode import EncodeOptions
from pixbatch.io.regions import RegionSource
from pixbatch.io.video import VideoError, VideoInfo, VideoReader, VideoWriter
from pixbatch.io.video_encoding import FORMATS, Span, VideoEncoding, main_codec, output_suffix, picture_codec
from pixbatch.io.video_parts import FramesWriter, Parts, assemble, join_frames, remove_parts
from pixbatch.runtime.batcher import WindowEngine
from pixbatch.runtime.canvas import Canvas
from pixbatch.runtime.jobs import JobBook
from pixbatch.runtime.sinks import Outputs
from pixbatch.runtime.spec import JobSpec
from pixbatch.runtime.task import Task

READ_AHEAD = 8  # decoded frames waiting for the model (memory: a few batches of frames)
FRAMES = "frames"  # the "codec" of an output written as a folder of images (--format png|tiff|jpg|webp)
ENCODE_QUEUE = 8  # finished frames waiting for the encoder


def video_outputs(task: Task, dst: Path, src_suffix: str, encoding: VideoEncoding) -> dict[str, tuple[Path, str]]:
    """(path, codec) of every file a video job writes: the main one at the planned ``dst``; the extras
    (an overlay) as videos beside it, in the picture codec's container."""
    out = {}
    for name, path in task.outputs(dst, False).items():
        if encoding.frames:  # folders of frames as images (dst has no suffix then)
            out[name] = (dst if name == task.main else path.with_suffix(""), FRAMES)
        elif name == task.main:
            out[name] = (dst, main_codec(task.main == "mask", src_suffix, encoding))
        else:
            codec = picture_codec(src_suffix, encoding)
            out[name] = (path.with_suffix(output_suffix(src_suffix, codec)), codec)
    return out


class VideoSink:
    """The outputs of one video (a Sink of frames): frames arrive in order with their pts and are encoded
    by a thread of their own, in segments of ``encoding.segment_frames`` kept in ``parts`` as each is
    complete (io/video_parts.py); ``commit`` assembles the segments into the files, atomically;
    ``discard`` removes the segment in progress (the complete ones stay for a resumed run)."""

    def __init__(self, task: Task, job: Job, info: VideoInfo, encoding: VideoEncoding, image_options: EncodeOptions,
                 parts: Parts) -> None:
        self.task, self.job, self.info, self.encoding = task, job, info, encoding
        self.image_options, self.overwrite = image_options, image_options.overwrite  # frames as images: as images are
        self.targets = video_outputs(task, job.dst, job.src.suffix, encoding)
        self.parts = parts
        self.writers: dict[str, VideoWriter] = {}
        self.segment: list[int] = []  # pts of the frames of the segment in progress
        self.input_mp = self.output_mp = 0.0
        self.notes: list[str] = []
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(ENCODE_QUEUE)
        self.thread = threading.Thread(target=self._encode, name="pixbatch-video-encoder", daemon=True)
        self.thread.start()

    def put(self, arrays: dict[str, np.ndarray], pts: int, input_mp: float) -> None:
        """One finished frame (its output arrays by name), in presentation order."""
        if self.error is not None:
            raise VideoError(f"cannot encode it ({self.error})")
        self.queue.put((arrays, pts, input_mp))

    def _encode(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue
            arrays, pts, input_mp = item
            try:
                if len(self.segment) == self.encoding.segment_frames:
                    self._close_segment()
                for name, arr in arrays.items():
                    if name not in self.writers:
                        self.writers[name] = self._writer(name, arr)
                    self.writers[name].write(arr[..., :3] if arr.shape[2] == 4 else arr, pts)
                self.segment.append(pts)
                self.input_mp += input_mp
                main = arrays[self.task.main]
                self.output_mp += main.shape[0] * main.shape[1] / 1e6
            except Exception as exc:
                self.error = exc

    def _writer(self, name: str, arr: np.ndarray) -> VideoWriter | FramesWriter:
        path, codec = self.targets[name]
        if codec == FRAMES:
            final = self.parts.path(name, len(self.parts.segments), "")
            return FramesWriter(temp_path(final), path.name, self.parts.first + self.parts.frames, self.encoding.frames,
                                self.image_options)
        if arr.dtype not in (np.uint8, np.uint16) or arr.shape[2] not in (1, 3, 4):
            raise VideoError(f"its {name} output ({arr.shape[2]} channel(s) of {arr.dtype}) cannot be a video")
        if arr.shape[2] == 4:
            self.notes.append("alpha is not kept in video outputs")
        fmt = FORMATS.get(path.suffix.lower(), "matroska")
        final = self.parts.path(name, len(self.parts.segments), path.suffix.lower())
        return VideoWriter(temp_path(final), fmt, arr.shape[1], arr.shape[0], 1 if arr.shape[2] == 1 else 3,
                           8 if arr.dtype == np.uint8 else 16, self.info, codec, self.encoding)

    def _close_segment(self) -> None:
        """Finish the segment in progress: flush its encoders, rename its files into the parts folder and
        list it in the manifest (then a killed run resumes after it)."""
        if not self.segment:
            return
        files = {}
        for name, writer in self.writers.items():
            writer.close()
            final = self.parts.path(name, len(self.parts.segments), self.targets[name][0].suffix.lower())
            os.replace(writer.path, final)
            files[name] = final
        self.writers.clear()
        self.parts.add(files, len(self.segment), self.segment[0], self.segment[-1])
        self.segment = []

    def _stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def finish(self) -> tuple[float, float]:
        """Encode the last segment and keep it with the others (a span of a split video: the driver joins
        the spans). Input and output MP."""
        self._stop()
        if self.error is not None:
            raise VideoError(f"cannot encode it ({self.error})")
        self._close_segment()
        return self.input_mp, self.output_mp

    def commit(self) -> tuple[float, float]:
        """Finish every output: the last segment, then each output assembled from its segments and the
        input's other streams, renamed into place (the main output last). Input and output MP."""
        try:
            self.finish()
            self.notes += place_outputs(self.task.main, self.targets, [self.parts], self.job.src, self.encoding,
                                        self.overwrite)
        finally:
            self.discard()
        self.parts.remove()
        return self.input_mp, self.output_mp

    def discard(self) -> None:
        """Stop encoding and remove the segment in progress."""
        self._stop()
        for writer in self.writers.values():
            writer.abort()
        self.writers.clear()


def place_outputs(main: str, targets: dict[str, tuple[Path, str]], parts: list[Parts], src: Path,
                  encoding: VideoEncoding, overwrite: bool) -> list[str]:
    """Each output (``targets``: name to path and codec) assembled from the segments of ``parts`` (in order)
    and ``src``'s other streams into a temporary file, then all renamed into place, the ``main`` one last;
    notes on streams left out."""
    frames = sum(p.frames for p in parts)
    assembled: dict[str, Path] = {}
    notes: list[str] = []
    try:
        for name, (path, codec) in targets.items():
            files = [f for p in parts for f in p.files(name)]
            if not files:
                continue
            assembled[name] = temp_path(path)
            if codec == FRAMES:
                join_frames(files, assembled[name], frames=frames)
                continue
            notes += assemble(files, src, assembled[name], FORMATS.get(path.suffix.lower(), "matroska"),
                              frames=frames, window=encoding)
        for name in [k for k in assembled if k != main] + [main]:
            place = commit_folder if targets[name][1] == FRAMES else commit
            place(assembled.pop(name), targets[name][0], overwrite)
    finally:
        for tmp in assembled.values():
            remove(tmp)
    return notes


def join_spans(task: Task, job: Job, spec: JobSpec, spans: list[Span]) -> list[str]:
    """A split video's outputs, once each of its ``spans`` has run (``run_video`` on ``job`` with the span):
    the spans' segments joined in order and committed as one run's would be; notes. VideoError when a span
    is not whole; OutputExistsError when an output appeared meanwhile. The segments go in every case."""
    try:
        parts = [Parts(job.dst, job.src, {}, span) for span in spans]
        for part, span in zip(parts, spans):
            if part.load() != span.frames:
                raise VideoError(f"part {span.index + 1} of {span.count} holds {part.frames} of its {span.frames} "
                                 "frames")
        return place_outputs(task.main, video_outputs(task, job.dst, job.src.suffix, spec.video), parts, job.src,
                             spec.video, spec.encode.overwrite)
    finally:
        remove_parts(job.dst)


def _settings(task: Task, spec: JobSpec) -> dict:
    """What decides a video's output frames: a resumed run continues only when these are the same."""
    info, runner = task.runner.info, task.runner
    settings = {"model": info.name, "arch": info.arch, "path": info.path, "dtype": str(runner.dtype),
                **({"int8": True} if runner.int8 else {}), "task": task.name, "task_settings": task.settings(), "windowing": asdict(spec.windowing),
                "encoding": asdict(spec.video)}
    return json.loads(json.dumps(settings, default=str))  # as the manifest will read back


def _read_ahead(reader: VideoReader, out: queue.Queue, stop: threading.Event, skip: int,
                last_pts: int | None, window: VideoEncoding, span: Span | None) -> None:
    """Decode frames into ``out`` (then None), or put the exception that ended decoding; the first
    ``skip`` are decoded only to reach the rest."""
    try:
        for item in reader.frames(skip, last_pts, window, span):
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put(None)
    except BaseException as exc:  # VideoError (the frame number said), or a decoder bug
        out.put(exc)


def run_video(task: Task, job: Job, engine: WindowEngine, book: JobBook, spec: JobSpec, *,
              progress: bool = False) -> None:
    """Run one claimed video job through ``engine`` and book its outcome (done, skipped or failed). A job
    with a span runs that part of the video only, and keeps its segments for ``join_spans``."""
    import sys

    from tqdm import tqdm

    try:
        reader = VideoReader(job.src, spec.video.untagged)
    except VideoError as exc:
        book.fail(job.src, str(exc))
        return
    failure: list[str] = []
    sink = None
    stop = threading.Event()
    frames: queue.Queue = queue.Queue(READ_AHEAD)
    thread = None
    parts = Parts(job.dst, job.src, _settings(task, spec), job.span)
    unsupported = sorted(set(task.outputs(job.dst, False)) - task.video_outputs())
    if unsupported:
        reader.close()
        book.fail(job.src, f"its {', '.join(unsupported)} output is not written for videos (only for images)")
        return
    try:
        resumed = parts.resume()
        if resumed:
            book.info(f"note: {job.src}: resuming after frame {parts.first + resumed - 1} ({len(parts.segments)} "
                      "segment(s) finished by an earlier run)")
        sink = VideoSink(task, job, reader.info, spec.video, spec.encode, parts)
        meta = ImageMeta("RGB", reader.info.bits, "VIDEO")
        thread = threading.Thread(target=_read_ahead, name="pixbatch-video-reader", daemon=True,
                                  args=(reader, frames, stop, resumed, parts.last_pts, spec.video, job.span))
        thread.start()
        total = job.span.frames if job.span else reader.info.frames or None
        with tqdm(total=total, initial=resumed, unit="frame", desc=job.src.name, leave=False,
                  disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
            index = parts.first + resumed  # the video's frame number, in messages
            while not failure:
                item = frames.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                pixels, pts = item
                _start_frame(task, job, meta, pixels, pts, index, engine, sink, failure, spec.encode)
                index += 1
                bar.update(1)
            engine.flush()
        if failure:
            raise VideoError(failure[0])
        if job.span is not None:
            book.progressed(*sink.finish())
            return
        try:
            book.done(*sink.commit())
        except OutputExistsError:
            book.skipped(job.src)
        for note in dict.fromkeys(sink.notes):
            book.info(f"note: {job.src}: {note}")
    except VideoError as exc:
        parts.remove()  # a failed video leaves nothing; an interrupted one keeps its finished segments
        book.fail(job.src, str(exc))
    except Exception as exc:  # an encoder or container error must not take the batch down
        parts.remove()
        book.fail(job.src, f"cannot process the video ({type(exc).__name__}: {exc})")
    finally:
        stop.set()
        if sink is not None:
            sink.discard()
        while thread is not None and thread.is_alive():  # let a reader blocked on a full queue see ``stop``
            try:
                frames.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)
        reader.close()


def _start_frame(task: Task, job: Job, meta: ImageMeta, pixels: np.ndarray, pts: int, index: int,
                 engine: WindowEngine, sink: VideoSink, failure: list[str], encode: EncodeOptions) -> None:
    """Queue one frame as an image of its own; when done, its outputs go to the sink in order."""
    source = RegionSource(task.input_pixels(pixels))
    outputs = Outputs(task, job, meta, source, False, encode)
    input_mp = source.height * source.width / 1e6

    def done() -> None:
        if not failure:
            try:
                sink.put(outputs.arrays, pts, input_mp)
            except VideoError as exc:
                failure.append(str(exc))

    def failed(reason: str) -> None:
        failure.append(f"frame {index}: {reason}")

    engine.add(Canvas(source, task.model_input, outputs.push, done, failed, fp32=task.fp32(meta),
                      prepare=task.tiled))
