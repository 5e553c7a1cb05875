"""Usage as people type it: global options after the command, a clear word when DST is missing,
the short options users of other upscalers expect."""

import json

from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from tests.conftest import gradient_rgb


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, prog_name="pixbatch")
    return result.exit_code, result.stdout, result.stderr


def test_global_options_after_the_command(tmp_path, tiny_checkpoint):
    Image.fromarray(gradient_rgb(8, 8)).save(tmp_path / "a.png")
    code, stdout, _ = run("upscale", tmp_path / "a.png", tmp_path / "out", "--model", tiny_checkpoint, "--json",
                          "--device", "cpu")
    summary = json.loads(stdout)
    assert code == 0 and summary["done"] == 1 and summary["settings"]["device"] == "cpu"
    code, stdout, stderr = run("upscale", tmp_path / "a.png", tmp_path / "out2", "--model", tiny_checkpoint, "-q")
    assert code == 0 and stdout == "" and stderr == ""
    code, _, stderr = run("upscale", tmp_path / "a.png", tmp_path / "out3", "--model", tiny_checkpoint, "-v")
    assert code == 0 and "settings: task=upscale" in stderr
    code, stdout, stderr = run("models", "--json", "--pattern", "edsr_tiny*")  # commands without images too
    assert code == 0 and [e["name"] for e in json.loads(stdout)] == ["edsr_tiny_x2", "edsr_tiny_x3", "edsr_tiny_x4"]
    code, _, stderr = run("upscale", tmp_path / "a.png", tmp_path / "out4", "--device", "cuda:7")
    assert code == 1 and stderr.startswith("error: ")  # the late --device is the one used


def test_a_missing_destination_says_what_is_needed(tmp_path):
    for args in (("upscale", tmp_path), ("segment", tmp_path), ("upscale",)):
        code, _, stderr = run(*args)
        assert code == 2
        assert f"give the inputs and the output folder: pixbatch {args[0]} SRC... DST" in stderr
        assert f"`pixbatch {args[0]} photos/ out/`" in stderr


def test_short_options(tmp_path, tiny_checkpoint):
    Image.fromarray(gradient_rgb(30, 40)).save(tmp_path / "a.png")
    code, stdout, _ = run("--json", "upscale", tmp_path / "a.png", tmp_path / "out", "-m", tiny_checkpoint, "-s", 2,
                          "-t", 16, "-f", "jpg")
    settings = json.loads(stdout)["settings"]
    assert code == 0 and settings["tile"] == 16 and settings["scale"] == 2
    assert Image.open(tmp_path / "out" / "a.jpg").size == (80, 60)


def test_no_images_found_says_where_before_loading_a_model(tmp_path, monkeypatch):
    """An empty folder, or a --glob that matches nothing: one line naming the folder (and the glob), exit 0,
    no model loaded, DST not created."""
    import pixbatch.cli.session as session

    def never(*a, **kw):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(session, "load_runner", never)
    (tmp_path / "empty").mkdir()
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(gradient_rgb(8, 8)).save(photos / "a.jpg")
    for command in ("upscale", "segment", "stylize"):
        extra = ["--style", photos / "a.jpg"] if command == "stylize" else []
        code, stdout, stderr = run(command, tmp_path / "empty", tmp_path / "out", *extra)
        assert code == 0 and stderr == f"no images found in {tmp_path / 'empty'}\n", stderr
        assert stdout.startswith("done 0, skipped 0, failed 0")
        code, _, stderr = run(command, photos, tmp_path / "out", "--glob", "*.png", *extra)
        assert code == 0 and stderr == f"no images found in {photos} (glob: *.png)\n", stderr
    assert not (tmp_path / "out").exists()


def test_a_device_that_does_not_exist_is_a_usage_error_before_anything_loads():
    import subprocess
    import sys

    from tests.conftest import REPO

    for args in (["--device", "gpu", "upscale", "a", "b"], ["upscale", "a", "b", "--device", "cuda:x"]):
        proc = subprocess.run([sys.executable, "-m", "pixbatch", *args], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: Invalid value for '--device'") and "use auto, cpu, cuda or cuda:N" in proc.stderr
    code, _, stderr = run("--device", "cuda:0", "models")  # well-formed: whether it exists is checked at start
    assert code == 0


def test_a_scale_the_model_does_not_have_points_to_outscale(tmp_path):
    Image.fromarray(gradient_rgb(8, 8)).save(tmp_path / "a.png")
    code, _, stderr = run("upscale", tmp_path / "a.png", tmp_path / "out", "--model", "rlfn_x4", "--scale", "3")
    assert code == 1
    assert stderr.strip() == ("error: rlfn_x4 upscales by 4, not 3; for x3 outputs from it use --outscale 3 "
                              "instead of --scale, or choose another model")


def test_a_dst_with_an_image_extension_is_the_output_file_of_one_input(tmp_path, tiny_checkpoint, seg_checkpoint):
    """`upscale a.jpg out.png` writes out.png (as PNG), never a folder named out.png; where a file cannot
    be the output (a folder or several inputs, segment's extra outputs, a format we do not write, a
    --format that disagrees), a DST with an image extension is a usage error."""
    from pixbatch.io.decode import decode_image

    Image.fromarray(gradient_rgb(12, 10)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not a folder")
    code, stdout, stderr = run("--json", "upscale", tmp_path / "a.jpg", tmp_path / "x" / "out.png",
                               "--model", tiny_checkpoint)
    assert code == 0 and json.loads(stdout)["done"] == 1, stderr
    assert (tmp_path / "x" / "out.png").is_file() and [p.name for p in (tmp_path / "x").iterdir()] == ["out.png"]
    pixels, meta = decode_image(tmp_path / "x" / "out.png")
    assert pixels.shape == (24, 20, 3) and meta.format == "PNG"
    code, stdout, _ = run("--json", "upscale", tmp_path / "a.jpg", tmp_path / "x" / "out.png", "--model", tiny_checkpoint)
    assert code == 0 and json.loads(stdout)["skipped"] == 1  # resumes like a folder
    for args, says in (
            (["upscale", tmp_path, tmp_path / "o.png"], "names a file: give a folder"),
            (["upscale", tmp_path / "a.jpg", tmp_path / "a.jpg", tmp_path / "o.png"], "names a file: give a folder"),
            (["segment", tmp_path / "a.jpg", tmp_path / "m.png", "--model", seg_checkpoint],
             "writes several files per image: give a folder"),
            (["upscale", tmp_path / "a.jpg", tmp_path / "o.bmp"], "pixbatch writes .png, .jpg, .webp or .tif files"),
            (["upscale", tmp_path / "a.jpg", tmp_path / "o.jpg", "--format", "png"], "--format png does not match"),
            (["upscale", tmp_path / "a.jpg", tmp_path / "notes.txt"], "is a file, not a folder")):
        code, _, stderr = run(*args, "--model", tiny_checkpoint) if args[0] == "upscale" else run(*args)
        assert code == 2 and says in stderr, (args, stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "notes.txt", "x"]
    (tmp_path / "dir.png").mkdir()  # an existing folder with such a name stays a folder
    assert run("upscale", tmp_path / "a.jpg", tmp_path / "dir.png", "--model", tiny_checkpoint)[0] == 0
    assert (tmp_path / "dir.png" / "a.jpg").is_file()
