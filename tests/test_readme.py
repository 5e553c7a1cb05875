"""Every `pixbatch` command in the README's code blocks runs as shown.

The commands are read from README.md itself; each must have an entry below, which says what the
README's placeholder paths become here (small real data: examples/, ../shared/data where present, a
checkpoint trained a few steps by the README's own training command) and which outputs it promises.
Only paths are substituted, plus a small --steps/--batch-size for training and a short bench. A
command added to the README without an entry here fails this test, and so does a stale entry."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from tests.conftest import COMPACT, DATA, REPO, write_disk_set

EXAMPLES = REPO / "examples"
IMDN_X4 = DATA / "weights" / "imdn_x4.pth"
SET5 = DATA / "sr" / "set5"


def readme_commands() -> list[str]:
    """`pixbatch ...` command lines inside the README's fenced code blocks, comments dropped."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.split("  #")[0].strip()
                if part.startswith("pixbatch"):
                    commands.append(part)
    return commands


def images_folder(folder, n=2, size=48):
    folder.mkdir(parents=True)
    for name in sorted(EXAMPLES.glob("*.jpg"))[:n]:
        with Image.open(name) as im:
            im.convert("RGB").resize((size, size)).save(folder / name.name)
    return folder


def tiled_tiff(path, size=300):
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 256, (size, size, 3), dtype=np.uint8), tile=(64, 64), photometric="rgb")
    return path


def example_style_net(path):
    """A style net saved as PyTorch's fast_neural_style example saves it (random weights)."""
    import torch

    from pixbatch.models import build_registered

    torch.manual_seed(0)
    torch.save(build_registered("johnson_style", width=8).state_dict(), path)
    return path


def video_clip(path):
    """A short clip with an audio track (the README's video line), made with PyAV."""
    from tests.conftest import make_clip

    make_clip(path, frames=6, audio=True)
    return path


def vgg_features(path):
    """torchvision VGG16's convolutional part with random weights (pretrained ones cannot be fetched)."""
    import torch
    from torchvision.models import vgg16

    torch.manual_seed(0)
    torch.save({f"features.{k}": v for k, v in vgg16(weights=None).features[:23].state_dict().items()}, path)
    return path


# README command -> (needs shared data?, extra arguments, outputs it promises, relative to the run folder)
ENTRIES = {
    "pixbatch upscale photos/ out/ --scale 4": (False, [], ["out/astronaut.jpg"]),
    "pixbatch upscale scan.tif out/ --scale 2 --tile 512": (False, [], ["out/scan.tif"]),
    "pixbatch upscale phone_photos/ out/ --model real_x4 --denoise 0.5": (False, [], ["out/astronaut.jpg"]),
    "pixbatch upscale in/ out/ --model path/to/realesr-animevideov3.pth": (True, [], ["out/astronaut.jpg"]),
    "pixbatch upscale clip.mp4 out/ --scale 2": (False, [], ["out/clip.mp4"]),
    "pixbatch segment fundus/ masks/": (False, [], ["masks/astronaut.png"]),
    "pixbatch segment slide.tif out/ --model my_unet.safetensors --tile 896 --overlap 64 --probabilities --overlay":
        (False, [], ["out/slide.tif", "out/slide_prob.tif", "out/slide_overlay.tif"]),
    "pixbatch stylize photos/ out/ --style path/to/candy.pth --max-side 1024 --strength 0.8":
        (False, [], ["out/astronaut.jpg"]),
    "pixbatch train style --style starry.jpg --content photos/ --vgg-weights vgg16-397923af.pth "
    "--out starry.safetensors": (False, ["--steps", "2", "--batch-size", "1", "--size", "32"], ["starry.safetensors"]),
    "pixbatch upscale in/ out/ --scale 4 --ray auto": (False, [], ["out/astronaut.jpg"]),
    "pixbatch segment slides/ masks/ --ray local --ray-workers 2": (False, [], ["masks/astronaut.png"]),
    "pixbatch models": (False, [], []),
    "pixbatch export rlfn_x4 rlfn_x4.onnx": (False, [], ["rlfn_x4.onnx"]),
    "pixbatch eval sr --model imdn_x4.pth --hr Set5/": (True, [], []),
    "pixbatch train sr --data photos/ --arch edsr_baseline --scale 2 --steps 20000 --out x2.safetensors":
        (False, ["--batch-size", "2", "--patch", "16"], ["x2.safetensors"]),
    "pixbatch train seg --images train/images --masks train/masks --arch unet --loss bce+dice --size 256,512 "
    "--out m.safetensors": (False, ["--steps", "2", "--batch-size", "1"], ["m.safetensors"]),
    "pixbatch eval seg --model m.safetensors --images test/images --masks test/masks --roi test/fov": (False, [], []),
    "pixbatch bench": (False, ["--images", "4", "--size", "48"], []),
    "pixbatch upscale examples/ out/ --scale 4": (False, [], ["out/coffee.png", "out/camera.png"]),
}


def test_every_readme_command_has_an_entry():
    commands = readme_commands()
    assert commands, "no pixbatch commands found in README.md"
    assert sorted(set(commands)) == sorted(ENTRIES), "README commands and this test's entries differ"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, seg_checkpoint):
    """The README's placeholder paths, as small real files and folders."""
    root = tmp_path_factory.mktemp("readme")
    paths = {
        "photos/": images_folder(root / "photos"), "in/": images_folder(root / "in"),
        "fundus/": images_folder(root / "fundus"),
        "phone_photos/": images_folder(root / "phone_photos"), "slides/": images_folder(root / "slides"), "examples/": EXAMPLES,
        "scan.tif": tiled_tiff(root / "scan.tif"), "slide.tif": tiled_tiff(root / "slide.tif"),
        "clip.mp4": video_clip(root / "clip.mp4"),
        "my_unet.safetensors": seg_checkpoint, "path/to/realesr-animevideov3.pth": COMPACT,
        "imdn_x4.pth": IMDN_X4, "Set5/": SET5,
        "path/to/candy.pth": example_style_net(root / "candy.pth"), "starry.jpg": EXAMPLES / "coffee.png",
        "vgg16-397923af.pth": vgg_features(root / "vgg16-397923af.pth"),
    }
    train_images, train_masks = write_disk_set(root / "train", 4, size=512)
    test_images, test_masks = write_disk_set(root / "test", 2, size=96, seed=10)
    fov = root / "test" / "fov"
    fov.mkdir()
    for mask in test_masks.iterdir():
        Image.fromarray(np.full((96, 96), 255, np.uint8)).save(fov / mask.name)
    paths.update({"train/images": train_images, "train/masks": train_masks, "test/images": test_images,
                  "test/masks": test_masks, "test/fov": fov})
    return root, paths


@pytest.fixture(scope="module")
def ray_cluster():
    """The README's --ray commands (auto: the running cluster) run on a local cluster of 2 CPUs."""
    ray = pytest.importorskip("ray", reason="--ray needs pixbatch[ray]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


TRAIN_SEG = next(c for c in ENTRIES if c.startswith("pixbatch train seg"))


def run_readme_command(command, root, paths, monkeypatch):
    """Run one README command in a folder of its own, placeholders substituted; return that folder."""
    _, extra, promised = ENTRIES[command]
    run_dir = root / "runs" / re.sub(r"\W+", "_", command)[:80]
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    monkeypatch.chdir(run_dir)
    args = [str(paths.get(token, token)) for token in shlex.split(command)[1:]]
    for option in ("--out", "--model"):  # checkpoints the README writes are shared by its later commands
        if option in args and args[args.index(option) + 1].endswith(".safetensors"):
            i = args.index(option) + 1
            if not Path(args[i]).is_absolute():
                args[i] = str(root / args[i])
    if "--steps" in args:
        args[args.index("--steps") + 1] = "2"
    result = CliRunner().invoke(cli, ["--device", "cpu", *args, *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for out in promised:
        where = root / out if out.endswith(".safetensors") else run_dir / out
        assert where.is_file(), (out, sorted(p.name for p in run_dir.rglob("*")))


@pytest.mark.slow
@pytest.mark.parametrize("command", list(ENTRIES))
def test_readme_command_runs_as_shown(command, workspace, monkeypatch, request):
    root, paths = workspace
    if ENTRIES[command][0] and not DATA.is_dir():
        pytest.skip(f"needs the shared data at {DATA}")
    if "m.safetensors" in command and command != TRAIN_SEG and not (root / "m.safetensors").exists():
        run_readme_command(TRAIN_SEG, root, paths, monkeypatch)  # the README trains the model it evaluates
    if "--ray" in command:
        request.getfixturevalue("ray_cluster")
    run_readme_command(command, root, paths, monkeypatch)
