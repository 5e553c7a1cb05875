"""Outputs of a fixed corpus, byte for byte: for a change that must not change any output (a refactor).

    python benchmarks/check_outputs_unchanged.py --out before.json          # with the code before
    python benchmarks/check_outputs_unchanged.py --compare before.json      # after: exit 1 if any byte differs

The corpus is made here from examples/ (seeded): RGB JPEG and PNG photos, a grayscale PNG, an RGBA PNG, a
16-bit PNG and a tiled TIFF (read by region). The jobs: upscale x2 and x4, segment with probabilities and
overlays, stylize with a seeded style net saved here; each once with ``--backend torch --precision fp32``
and once with the defaults. Every job is far below 64 MP, so ``--backend auto`` never chooses by timing.
Each job runs the CLI in its own process on the CPU; the result maps job -> output file -> sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from benchlib import REPO, environment
from PIL import Image

JOBS = {
    "upscale_x2": ["upscale", "{src}", "{dst}", "--scale", "2"],
    "upscale_x4": ["upscale", "{src}", "{dst}", "--scale", "4"],
    "segment": ["segment", "{src}", "{dst}", "--probabilities", "--overlay", "--tile", "64"],
    "stylize": ["stylize", "{src}", "{dst}", "--style", "{style}"],
}
MODES = {"torch_fp32": ["--backend", "torch", "--precision", "fp32"], "defaults": []}


def make_corpus(folder: Path) -> Path:
    """Small inputs of every kind the engine treats differently."""
    import tifffile

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((REPO / "examples").glob("*.*"))
              if p.suffix in (".jpg", ".png")]
    crops = [a[: 72 + 8 * i, : 96 - 4 * i] for i, a in enumerate(photos)]
    Image.fromarray(crops[0]).save(folder / "photo.jpg", quality=92)
    Image.fromarray(crops[1]).save(folder / "rgb.png")
    Image.fromarray(crops[2]).convert("L").save(folder / "gray.png")
    alpha = (rng.random(crops[3].shape[:2]) * 255).astype(np.uint8)
    Image.fromarray(np.dstack([crops[3], alpha])).save(folder / "rgba.png")
    deep = (crops[0].astype(np.uint16) * 257 + rng.integers(0, 257, crops[0].shape, dtype=np.uint16))
    Image.fromarray(deep[..., 0]).save(folder / "deep16.png")  # 16-bit grayscale (Pillow's I;16)
    tifffile.imwrite(folder / "tiled.tif", np.ascontiguousarray(photos[1][:150, :140]), tile=(32, 32),
                     photometric="rgb")
    return folder


def make_style(path: Path) -> Path:
    """A seeded narrow style net, saved as `pixbatch train style` saves one."""
    import torch

    from pixbatch.models import build_registered
    from pixbatch.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    module = build_registered("johnson_style", width=8)
    with torch.no_grad():  # outputs that span the pixel range
        module.deconv3.conv2d.weight.mul_(40)
        module.deconv3.conv2d.bias.fill_(128)
    save_checkpoint(module, path, name="johnson_style", kwargs={"width": 8})
    return path


def run_all(root: Path) -> dict[str, dict[str, str]]:
    src, style = make_corpus(root / "in"), make_style(root / "style.safetensors")
    hashes = {}
    for job, args in JOBS.items():
        for mode, extra in MODES.items():
            dst = root / f"{job}-{mode}"
            cmd = [a.format(src=src, dst=dst, style=style) for a in args] + extra
            proc = subprocess.run([sys.executable, "-m", "pixbatch", "--device", "cpu", *cmd], cwd=REPO,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{job} {mode} failed ({proc.returncode}):\n{proc.stderr}")
            hashes[f"{job} {mode}"] = {str(p.relative_to(dst)): hashlib.sha256(p.read_bytes()).hexdigest()
                                       for p in sorted(dst.rglob("*")) if p.is_file()}
            print(f"{job:<11} {mode:<10} {len(hashes[f'{job} {mode}'])} outputs", flush=True)
    return hashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the hashes here")
    ap.add_argument("--compare", type=Path, help="a result written before: exit 1 unless every byte is the same")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        hashes = run_all(Path(tmp))
    result = {"environment": environment(torch.device("cpu")), "outputs": hashes}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    if args.compare:
        before = json.loads(args.compare.read_text())["outputs"]
        differ = [f"{job}: {name}" for job in sorted(set(before) | set(hashes))
                  for name in sorted(set(before.get(job, {})) | set(hashes.get(job, {})))
                  if before.get(job, {}).get(name) != hashes.get(job, {}).get(name)]
        files = sum(len(v) for v in hashes.values())
        if differ:
            print(f"{len(differ)} of {files} outputs differ from {args.compare}:\n  " + "\n  ".join(differ))
            sys.exit(1)
        print(f"all {files} outputs of {len(hashes)} jobs are byte-identical to {args.compare}")


if __name__ == "__main__":
    main()
