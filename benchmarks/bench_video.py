"""Video upscaling: pixbatch's pipeline next to a plain per-frame loop and each stage alone, one clip, one run.

    python benchmarks/bench_video.py [--frames 48] [--width 640 --height 360] [--model rlfn_x2]

The clip is made here with PyAV: a slow pan over the repo's example photo (camera.png), H.264 (x264 crf 18),
--width x --height. Every measurement upscales it with the same prepared model (the default x2 model, the
default precision) and encodes with x264 crf 18, preset medium:
  * each stage alone: decode (PyAV, thread_type AUTO, to RGB), compute (the frames batched through the
    engine's windows), encode (pixbatch's VideoWriter, the pipeline's settings);
  * pixbatch: `run_job` on the clip, end to end (what `pixbatch upscale clip.mp4 out/` runs), and its
    efficiency = its frame rate / the slowest stage's own capacity (DESIGN.md's definition);
  * a plain per-frame loop, as the popular upscaler's video script does: decode one frame, run the model on
    it at batch 1, encode it, in order (in-process PyAV, not a pipe to an ffmpeg process).
Prints a table and writes JSON to benchmarks/results/video_<device>.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from benchlib import REPO, device_tag, environment, write_result


def make_clip(path: Path, frames: int, width: int, height: int, gop: int | None = None) -> None:
    """FRAMES frames of a slow pan over the repo's camera photo, x264 crf 18 preset medium, BT.601 tags;
    a keyframe every GOP frames (None: x264's default, 250)."""
    import av
    from PIL import Image

    photo = np.asarray(Image.open(REPO / "examples" / "camera.png").convert("RGB").resize((width * 2, height * 2)))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "18", "preset": "medium", **({"g": str(gop)} if gop else {})}
        cc = vs.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 6, 6, 6, 1  # BT.601, SD
        for i in range(frames):
            y0, x0 = i * height // (2 * frames), i * width // frames  # a slow pan
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[y0:y0 + height, x0:x0 + width]),
                                               format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="smpte170m", dst_color_range="MPEG")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="rlfn_x2")  # the default x2 model
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    import torch

    from pixbatch.cli.session import load_runner
    from pixbatch.io.discover import plan_jobs
    from pixbatch.io.video import VideoReader, VideoWriter
    from pixbatch.io.video_encoding import VideoEncoding
    from pixbatch.runtime.engine import run_job
    from pixbatch.runtime.jobs import Report
    from pixbatch.runtime.spec import ComputeSpec, JobSpec, ModelSpec
    from pixbatch.tasks.upscale import UpscaleTask, pixels_from_planes, planes_from_pixels, upscale_tensor

    runner = load_runner(ModelSpec(args.model), ComputeSpec(device="cpu" if not torch.cuda.is_available()
                                                            else "auto"), n_jobs=1)
    dev, s, n = runner.device, runner.info.scale, args.frames
    res = {"env": environment(dev), "model": args.model, "scale": s, "frames": n,
           "size": [args.width, args.height], "precision": str(runner.dtype).removeprefix("torch."),
           "encoder": "libx264 crf 18 preset medium"}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / "clip.mp4"
        make_clip(clip, n, args.width, args.height)
        upscale_tensor(runner, torch.rand(1, 3, args.height, args.width, device=dev))  # warm-up

        t = time.perf_counter()
        reader = VideoReader(clip)
        info = reader.info
        frames = list(reader.frames())
        reader.close()
        rows["decode alone"] = time.perf_counter() - t

        t = time.perf_counter()
        planes = torch.cat([planes_from_pixels(torch.from_numpy(px).to(dev), 8) for px, _ in frames])
        outs = upscale_tensor(runner, planes, report=Report())
        pixels = [pixels_from_planes(o[None], "RGB", 8).cpu().numpy() for o in outs]
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        rows["compute alone (batched by the engine)"] = time.perf_counter() - t

        t = time.perf_counter()
        writer = VideoWriter(tmp / "enc.mp4", "mp4", args.width * s, args.height * s, 3, 8, info, "h264",
                             VideoEncoding())
        for arr, (_, pts) in zip(pixels, frames):
            writer.write(arr, pts)
        writer.close()
        rows["encode alone"] = time.perf_counter() - t

        spec = JobSpec(model=ModelSpec(args.model), windowing=UpscaleTask.windowing())
        t = time.perf_counter()
        report = run_job(UpscaleTask(runner), plan_jobs([clip], tmp / "out"), spec, log=lambda m: None)
        rows["pixbatch (run_job, end to end)"] = time.perf_counter() - t
        assert report.done == 1 and not report.failed, report.failed

        t = time.perf_counter()
        reader = VideoReader(clip)
        writer = VideoWriter(tmp / "loop.mp4", "mp4", args.width * s, args.height * s, 3, 8, info, "h264",
                             VideoEncoding())
        for px, pts in reader.frames():  # one frame at a time: decode, model at batch 1, encode
            x = planes_from_pixels(torch.from_numpy(px).to(dev), 8)
            with torch.inference_mode():
                y = runner(x)
                writer.write(pixels_from_planes(y, "RGB", 8).cpu().numpy(), pts)
        writer.close()
        reader.close()
        rows["plain per-frame loop"] = time.perf_counter() - t

    stages = ("decode alone", "compute alone (batched by the engine)", "encode alone")
    slowest = max(rows[k] for k in stages)
    res["seconds"] = rows
    res["fps"] = {k: n / v for k, v in rows.items()}
    res["efficiency"] = slowest / rows["pixbatch (run_job, end to end)"]
    res["vs_plain_loop"] = rows["plain per-frame loop"] / rows["pixbatch (run_job, end to end)"]
    print(f"{res['env']['device']}, {res['env']['threads']} threads; {args.model} x{s} ({res['precision']}), "
          f"{n} frames of {args.width}x{args.height} H.264 -> x264 crf 18 medium")
    for k, v in rows.items():
        print(f"  {k:<40} {n / v:7.2f} frames/s")
    print(f"  pipeline efficiency (pixbatch / slowest stage): {res['efficiency']:.2f}")
    print(f"  pixbatch vs the plain per-frame loop: {res['vs_plain_loop']:.2f}x")
    print(write_result(res, f"video_{device_tag(dev)}", args.out))


if __name__ == "__main__":
    main()
