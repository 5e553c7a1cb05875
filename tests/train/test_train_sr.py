"""Training: smoke run, reproducibility, resume, progressive resizing, perceptual loss."""


import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from pixbatch.cli import cli
from pixbatch.models import create_model
from pixbatch.train.sr import PerceptualLoss, SrTrainConfig, init_from, train_sr
from tests.conftest import gradient_rgb

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i in range(4):
        Image.fromarray(gradient_rgb(72, 80, seed=i)).save(folder / f"{i}.png")
    return folder


def _cfg(photos, out, **kw):
    base = {"data": [photos], "arch": "edsr_tiny_x2", "out": out, "steps": 6, "batch_size": 2, "patch": 12,
            "val_every": 3, "save_every": 3, "amp": False, "threads": 1}
    return SrTrainConfig(**{**base, **kw})


def test_cli_trains_and_writes_a_usable_checkpoint(photos, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ["--device", "cpu", "train", "sr", "--data", str(photos), "--arch", "edsr_tiny", "--scale", "2",
            "--steps", "4", "--batch-size", "2", "--patch", "12", "--val-every", "2", "--no-amp"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"saved {out}: validation PSNR ")
    info = create_model(out).info
    assert info.source == "checkpoint" and info.scale == 2 and info.training["steps"] == 4
    assert info.training["loss"] == "l1" and not (tmp_path / "m.safetensors.state").exists()


def test_seed_makes_cpu_training_reproducible(photos, tmp_path):
    train_sr(_cfg(photos, tmp_path / "a.safetensors"), torch.device("cpu"), progress=False)
    train_sr(_cfg(photos, tmp_path / "b.safetensors"), torch.device("cpu"), progress=False)
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train_sr(_cfg(photos, tmp_path / "c.safetensors", seed=1), torch.device("cpu"), progress=False)
    c = load_file(tmp_path / "c.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_continues_exactly(photos, tmp_path, monkeypatch):
    full = tmp_path / "full.safetensors"
    train_sr(_cfg(photos, full), torch.device("cpu"), progress=False)
    part = tmp_path / "part.safetensors"
    import pixbatch.models.checkpoint as ckpt

    # interrupt the second run right after its step-3 state is written: the final save fails
    monkeypatch.setattr(ckpt, "save_checkpoint", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train_sr(_cfg(photos, part, steps=6), torch.device("cpu"), progress=False)
    monkeypatch.undo()
    assert (tmp_path / "part.safetensors.state").is_file()
    state = torch.load(tmp_path / "part.safetensors.state", weights_only=True)
    assert state["step"] == 3
    # resume from step 3: must end where the uninterrupted run ended
    state_path = tmp_path / "part.safetensors.state"
    train_sr(_cfg(photos, part, resume=True), torch.device("cpu"), progress=False)
    a, b = load_file(full), load_file(part)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not state_path.exists()


def test_progressive_init_copies_all_but_the_new_upsampler(photos, tmp_path):
    x2 = tmp_path / "x2.safetensors"
    train_sr(_cfg(photos, x2), torch.device("cpu"), progress=False)
    net = create_model("edsr_tiny_x4", pretrained=False).module
    fresh = init_from(net, x2)
    assert fresh == ["upsampler.2.weight", "upsampler.2.bias"]  # the second x2 step is new
    src = load_file(x2)
    assert torch.equal(net.head.weight, src["head.weight"]) and torch.equal(net.tail.weight, src["tail.weight"])
    w = net.upsampler[2].weight
    assert torch.equal(w[0::4], w[1::4])  # ICNR re-applied to the new layer
    out = tmp_path / "x4.safetensors"
    recipe = train_sr(_cfg(photos, out, arch="edsr_tiny_x4", init=x2, freeze_steps=3), torch.device("cpu"),
                      progress=False)
    assert recipe["init"] == str(x2) and create_model(out).info.scale == 4


def test_perceptual_loss_needs_local_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    with pytest.raises(FileNotFoundError, match="never downloads them; torchvision's ImageNet VGG16 file is "
                                                "vgg16-397923af.pth"):
        PerceptualLoss(None)
    from torchvision.models import vgg16

    torch.manual_seed(0)
    path = tmp_path / "vgg16-local.pth"
    torch.save(vgg16(weights=None).state_dict(), path)
    loss = PerceptualLoss(path)
    x = torch.rand(1, 3, 32, 32)
    assert loss(x, x).item() == 0 and loss(x, x.flip(-1)).item() > 0


def test_unknown_arch_is_a_startup_error(photos, tmp_path):
    result = CliRunner().invoke(cli, ["train", "sr", "--data", str(photos), "--arch", "nope", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unknown model 'nope'" in result.stderr


def test_model_kwargs_are_stored_so_the_checkpoint_rebuilds_itself(photos, tmp_path):
    out = tmp_path / "small.safetensors"
    args = ["--device", "cpu", "train", "sr", "--data", str(photos), "--arch", "edsr_tiny_x2", "--steps", "2",
            "--batch-size", "2", "--patch", "12", "--no-amp", "--model-kwargs", '{"n_resblocks": 1, "n_feats": 8}']
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    info = create_model(out).info
    assert info.params == sum(p.numel() for p in create_model("edsr_tiny_x2", pretrained=False, n_resblocks=1,
                                                                n_feats=8).module.parameters())
    bad = CliRunner().invoke(cli, [*args[:-1], "[1, 2]", "--out", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 1 and "--model-kwargs must be a JSON object, got '[1, 2]'" in bad.stderr


def test_init_by_built_in_name_starts_rlfn_x2_as_rlfn_x4_box_filtered(photos, tmp_path):
    net = create_model("rlfn_x2", pretrained=False).module.eval()
    fresh = init_from(net, "rlfn_x4")
    assert fresh == ["upsampler.0.weight", "upsampler.0.bias"]
    x4 = create_model("rlfn_x4").module.eval()
    assert torch.equal(net.block_4.c5.weight, x4.block_4.c5.weight) and torch.equal(net.conv_1.weight, x4.conv_1.weight)
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():  # the x4 head resampled to 2x2 sub-pixels: x4's output, each 2x2 block averaged
        torch.testing.assert_close(net(x), torch.nn.functional.avg_pool2d(x4(x), 2), atol=2e-5, rtol=0)
    out = tmp_path / "m.safetensors"
    args = ["--device", "cpu", "train", "sr", "--data", str(photos), "--arch", "rlfn_x2", "--init", "rlfn_x4",
            "--steps", "2", "--batch-size", "2", "--patch", "16", "--no-amp", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    assert create_model(out).info.training["init"] == "rlfn_x4"
    bad = CliRunner().invoke(cli, [*args[:-2], "--init", "rlfn_x9", "--out", str(out)])
    assert bad.exit_code == 1 and "--init rlfn_x9: no such file, and no built-in model" in bad.stderr


def test_holdout_images_are_validated_with_the_saved_moving_average_and_the_curve_is_kept(tmp_path):
    from pixbatch.train.sr_data import HeldOut

    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        Image.fromarray(gradient_rgb(60, 64, seed=i)).save(data / f"{i}.png")
    (tmp_path / "holdout.txt").write_text("1.png\n3.png\n")
    out = tmp_path / "m.safetensors"
    recipe = train_sr(_cfg(data, out, holdout=tmp_path / "holdout.txt", ema=0.9, steps=6, val_every=2),
                      torch.device("cpu"), progress=False)
    assert recipe["train_images"] == 3 and recipe["holdout_images"] == 2 and recipe["ema"] == 0.9
    held = HeldOut([data / "1.png", data / "3.png"], 2)
    saved = create_model(out).module.eval()
    with torch.no_grad():
        assert held.psnr_y(saved, torch.device("cpu")) == pytest.approx(recipe["val_psnr_y"], abs=1e-3)
    rows = (tmp_path / "m.curve.csv").read_text().splitlines()
    assert rows[0] == "step,seconds,loss,val_psnr_y" and [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]
    assert float(rows[-1].split(",")[3]) == pytest.approx(recipe["val_psnr_y"], abs=1e-3)


@pytest.mark.parametrize(("value", "error"), [("0", True), ("10m", False), ("2.5min", False), ("m", True),
                                              ("-1m", True), ("100", False)])
def test_save_every_takes_steps_or_minutes(photos, tmp_path, value, error):
    args = ["--device", "cpu", "train", "sr", "--data", str(photos), "--arch", "edsr_tiny_x2", "--steps", "1",
            "--batch-size", "1", "--patch", "12", "--no-amp", "--save-every", value, "--out", str(tmp_path / "m.st")]
    result = CliRunner().invoke(cli, args)
    assert (result.exit_code == 2 and "expected steps (1000) or minutes (10m)" in result.stderr) if error else \
        result.exit_code == 0, result.stderr


def test_mixed_precision_trains_channels_last_and_resumes_exactly(photos, tmp_path, monkeypatch):
    full = tmp_path / "full.safetensors"
    recipe = train_sr(_cfg(photos, full, amp=True), torch.device("cpu"), progress=False)
    assert recipe["layout"] == "channels_last" and recipe["amp"] == "bfloat16"
    assert train_sr(_cfg(photos, tmp_path / "fp32.safetensors"), torch.device("cpu"), progress=False)["layout"] \
        == "contiguous"
    part = tmp_path / "part.safetensors"
    import pixbatch.models.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "save_checkpoint", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train_sr(_cfg(photos, part, amp=True), torch.device("cpu"), progress=False)
    monkeypatch.undo()
    train_sr(_cfg(photos, part, amp=True, resume=True), torch.device("cpu"), progress=False)
    a, b = load_file(full), load_file(part)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_real_degradation_trains_in_a_worker_from_a_seed_with_the_fft_loss(photos, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.safetensors"
        args = ["--device", "cpu", "train", "sr", "--data", str(photos), "--arch", "edsr_tiny_x2", "--steps", "3",
                "--batch-size", "2", "--patch", "16", "--val-every", "3", "--no-amp", "--degrade", "real",
                "--loss", "l1+fft", "--workers", "1", "--threads", "1", "--out", str(out)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.stderr
        outs.append(load_file(out))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])  # the workers' stream comes from the seed
    training = create_model(tmp_path / "a.safetensors").info.training
    assert training["degrade"] == "real" and training["loss"] == "l1+fft"


def test_fft_loss_adds_the_spectrum_difference_to_l1():
    from pixbatch.train.sr import L1FftLoss

    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    spectrum = (torch.view_as_real(torch.fft.rfft2(a, norm="ortho")) - torch.view_as_real(torch.fft.rfft2(b, norm="ortho")))
    expected = (a - b).abs().mean() + 0.05 * spectrum.abs().mean()
    assert torch.allclose(L1FftLoss()(a, b), expected)
    assert L1FftLoss()(a, a).item() == 0
