"""Shared fixtures: real image files of every kind, small checkpoints, the shared data folder."""

from __future__ import annotations

import os

import torch

# Without a GPU, Triton kernels run in Triton's CPU interpreter (slow, exact); this must be set
# before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# int8 models made by the tests (and the commands they run) are cached here, never in the user's cache
if "PIXBATCH_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["PIXBATCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="pixbatch-test-cache-")
    atexit.register(shutil.rmtree, os.environ["PIXBATCH_CACHE_DIR"], True)

import functools  # noqa: E402
import io  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PIXBATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
COMPACT = DATA / "weights" / "realesr-animevideov3.pth"

requires_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")


def gradient_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth photo-like RGB image with some texture, uint8 HWC."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), (xx + yy) / max(h + w - 2, 1)], -1) * 200 + 20
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def noisy_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Uniform noise, uint8 HWC: compresses badly, so encoded sizes are predictable."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def photo_folder(folder: Path, n: int, size: int | tuple[int, int], name: str = "{i}.png",
                 pixels=gradient_rgb) -> Path:
    """``n`` PNG images named by ``name`` (``{i}``), each ``pixels(h, w, seed=i)``."""
    h, w = (size, size) if isinstance(size, int) else size
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(pixels(h, w, seed=i)).save(folder / name.format(i=i))
    return folder


@functools.cache
def srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_with(orientation: int, **tags) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    for tag, value in tags.items():
        exif[int(tag.removeprefix("t"))] = value
    return exif.tobytes()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small x2 EDSR in our checkpoint format (random but fixed weights; fast on the CPU)."""
    from pixbatch.models import build_registered
    from pixbatch.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kwargs = {"n_resblocks": 2, "n_feats": 8}
    module = build_registered("edsr_tiny_x2", **kwargs)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_x2.safetensors"
    save_checkpoint(module, path, name="edsr_tiny_x2", kwargs=kwargs, training={"note": "test fixture"})
    return path


def write_png_bytes(arr: np.ndarray, mode: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG", **kw)
    return buf.getvalue()


def disks(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic segmentation pair: bright disks on a noisy dark background (RGB) and their 0/255 mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    mask = np.zeros((size, size), bool)
    for _ in range(4):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 12, size // 5))]
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img = rng.normal(60, 20, (size, size, 3)) + mask[..., None] * np.array([120, 90, 60])
    return np.clip(img, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def write_disk_set(folder: Path, n: int, size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """n pairs as images/<i>_img.png and masks/<i>_mask.png (paired by the id before '_')."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(n):
        img, mask = disks(size, seed + i)
        Image.fromarray(img).save(images / f"{i:02d}_img.png")
        Image.fromarray(mask).save(masks / f"{i:02d}_mask.png")
    return images, masks


def _seg_checkpoint(folder: Path, classes: int) -> Path:
    from pixbatch.models import build_registered
    from pixbatch.models.checkpoint import save_checkpoint

    torch.manual_seed(classes)
    kwargs = {"base": 4, "depth": 2, "num_classes": classes}
    module = build_registered("unet", **kwargs).eval()
    path = folder / f"seg{classes}.safetensors"
    save_checkpoint(module, path, name="unet", kwargs=kwargs, training={"threshold": 0.5})
    return path


@pytest.fixture(scope="session")
def seg_checkpoint(tmp_path_factory) -> Path:
    """A small binary U-Net in our checkpoint format (random but fixed weights)."""
    return _seg_checkpoint(tmp_path_factory.mktemp("seg"), 1)


@pytest.fixture(scope="session")
def style_checkpoint(tmp_path_factory) -> Path:
    """A narrow TransformerNet in our checkpoint format: random but fixed weights whose output spans
    the pixel range (the last conv scaled up, its bias at mid-gray)."""
    from pixbatch.models import build_registered
    from pixbatch.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    module = build_registered("johnson_style", width=8)
    with torch.no_grad():
        module.deconv3.conv2d.weight.mul_(40)
        module.deconv3.conv2d.bias.fill_(128)
    path = tmp_path_factory.mktemp("style") / "tiny_style.safetensors"
    save_checkpoint(module, path, name="johnson_style", kwargs={"width": 8})
    return path


@pytest.fixture(scope="session")
def seg3_checkpoint(tmp_path_factory) -> Path:
    """A small 3-class U-Net."""
    return _seg_checkpoint(tmp_path_factory.mktemp("seg3"), 3)


@pytest.fixture(autouse=True)
def _torch_threads():
    """A job handed to OpenVINO sets PyTorch's CPU threads to one (runtime/prepare.py): not for the
    tests that follow it."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def clip_frame(i: int, height: int, width: int, bits: int = 8) -> np.ndarray:
    """Frame ``i`` of a test clip: smooth ramps that move, so every frame differs and a shift shows."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack([(xx + 3 * i) / (width + 3 * i), yy / max(height - 1, 1),
                    0.5 + 0.4 * np.sin((xx + yy + 5 * i) / 7)], -1)
    maxv = 255 if bits == 8 else 65535
    return np.round(np.clip(rgb, 0, 1) * maxv).astype(np.uint8 if bits == 8 else np.uint16)


def make_clip(path: Path, frames: int = 12, size: tuple[int, int] = (48, 64), *, vfr: bool = False,
              audio: bool = False, subtitles: bool = False, bits: int = 8, codec: str = "libx264",
              chapters: bool = False, colorspace: int | None = 1, rotation: int = 0, gop: int = 6,
              bframes: int = 0) -> list[int]:
    """A short clip made with PyAV (tests make their own videos): ``frames`` frames of ``clip_frame``,
    1 ms time base (VFR: every third frame lasts 50 ms instead of 33), optionally an AAC track, a
    subtitle track and chapters; returns the frames' pts."""
    import av

    h, w = size
    out = av.open(str(path), "w")
    vs = out.add_stream(codec, rate=30)
    vs.width, vs.height = w, h
    vs.pix_fmt = "yuv420p" if bits == 8 else "yuv420p10le"
    vs.time_base = vs.codec_context.time_base = Fraction(1, 1000)
    if rotation:
        vs.set_display_rotation(rotation)
    if colorspace is not None:
        cc = vs.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = colorspace, colorspace, colorspace, 1
    if codec == "libx264":
        vs.options = {"crf": "12", "preset": "ultrafast", "g": str(gop), "bf": str(bframes)}
    elif codec == "libx265":
        vs.options = {"crf": "12", "preset": "ultrafast", "x265-params": "log-level=error"}
    aus = out.add_stream("aac", rate=48000) if audio else None
    if aus is not None:
        aus.layout = "stereo"
    subs = out.add_mux_stream("subrip") if subtitles else None
    if chapters:
        out.set_chapters([{"id": 1, "start": 0, "end": 200, "time_base": Fraction(1, 1000),
                           "metadata": {"title": "first"}}])
    out.metadata["title"] = "pixbatch test clip"
    pts, t = [], 0
    for i in range(frames):
        f = av.VideoFrame.from_ndarray(clip_frame(i, h, w, bits), format="rgb24" if bits == 8 else "rgb48le")
        f = f.reformat(format=vs.pix_fmt, dst_colorspace="itu709", dst_color_range="MPEG")
        f.pts, f.time_base = t, Fraction(1, 1000)
        pts.append(t)
        t += 50 if vfr and i % 3 == 2 else 33
        out.mux(vs.encode(f))
    out.mux(vs.encode(None))
    if aus is not None:
        size_ = aus.codec_context.frame_size or 1024
        for s0 in range(0, 48 * t, size_):
            a = (0.3 * np.sin(np.arange(s0, s0 + size_) / 9.0)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([a, a]), format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = 48000, s0, Fraction(1, 48000)
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))
    if subs is not None:
        for k, start in enumerate((0, t // 2)):
            p = av.Packet(f"line {k}".encode())
            p.stream, p.pts, p.dts, p.duration, p.time_base = subs, start, start, 100, Fraction(1, 1000)
            out.mux(p)
    out.close()
    return pts
