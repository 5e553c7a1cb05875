"""The project installs from a wheel (not only editable) and runs from outside the source tree."""

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_installs_and_runs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True, cwd=tmp_path, capture_output=True)
    wheel = next((tmp_path / "dist").glob("pixbatch-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "pixbatch = pixbatch.cli:main" in entry_points
    assert "pixbatch/kernels/__init__.py" in names and "pixbatch/cli/upscale.py" in names
    assert not any(n.startswith(("tests/", "kernels/", "benchmarks/")) for n in names)
    assert {f"pixbatch/examples/{f}" for f in ("astronaut.jpg", "rocket.jpg", "coffee.png", "camera.png")} <= set(names)
    weights = sorted(n for n in names if n.startswith("pixbatch/weights/"))
    assert weights == sorted([*(f"pixbatch/weights/edsr_tiny_x{s}.safetensors" for s in (2, 3, 4)),
                              *(f"pixbatch/weights/rlfn_x{s}.safetensors" for s in (2, 3, 4)),
                              *(f"pixbatch/weights/real_x{s}{end}.safetensors" for s in (2, 4) for end in ("", ".denoise0")),
                              "pixbatch/weights/unet_drive.safetensors"])

    # Install the wheel alone into a folder and run it from elsewhere: it must not need the source tree.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = tmp_path / "elsewhere"
    run.mkdir()

    def pixbatch(*args):
        return subprocess.run([sys.executable, "-m", "pixbatch", *map(str, args)], cwd=run, env=env,
                              capture_output=True, text=True)

    where = subprocess.run([sys.executable, "-c", "import pixbatch, pixbatch.kernels; print(pixbatch.__file__)"],
                           cwd=run, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target))
    listing = pixbatch("models")
    assert listing.returncode == 0 and "shipped (default for --scale 4)" in listing.stdout
    done = pixbatch("upscale", REPO / "examples" / "coffee.png", run / "out")
    assert done.returncode == 0, done.stderr
    assert (run / "out" / "coffee.png").is_file()
    done = pixbatch("segment", REPO / "examples" / "coffee.png", run / "seg")  # the shipped unet_drive
    assert done.returncode == 0, done.stderr
    assert (run / "seg" / "coffee.png").is_file()
    # `pixbatch bench` with no --photos measures the example photos installed with the package.
    bench = pixbatch("--device", "cpu", "bench", "--images", 4, "--size", 48)
    assert bench.returncode == 0, bench.stderr
    assert "plain eager loop" in bench.stdout and "bottleneck" in bench.stdout
