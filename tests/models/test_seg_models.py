import pytest
import torch

from pixbatch.models import build_registered, create_model, list_models
from pixbatch.models.checkpoint import save_checkpoint
from pixbatch.models.foreign.spandrel_loader import probe_receptive_field
from pixbatch.models.seg.resnet_unet import load_encoder_weights


def test_segmentation_models_are_registered():
    assert {"unet", "unet_small", "unet_drive", "segnet", "segnet_small", "resnet34_unet"} <= set(list_models())
    assert list_models("unet*") == ["unet", "unet_drive", "unet_small"]


@pytest.mark.parametrize("name, kwargs", [
    ("unet", {"base": 4, "depth": 3}),
    ("unet", {"base": 4, "depth": 3, "upsample": "resize"}),
    ("segnet", {"width": 0.05}),
    ("resnet34_unet", {"decoder_channels": (16, 8, 8, 4, 4)}),
])
@pytest.mark.parametrize("size", [(37, 53), (64, 64), (5, 3)])
def test_any_input_size_gives_the_same_size_out(name, kwargs, size):
    model = build_registered(name, num_classes=4, **kwargs).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, *size))
    assert y.shape == (1, 4, *size) and torch.isfinite(y).all()


def test_describe_reports_task_classes_and_size_multiple():
    info = create_model("unet_small", num_classes=3).info
    assert (info.task, info.out_channels, info.size_multiple, info.scale) == ("seg", 3, 16, 1)
    assert create_model("segnet_small").info.size_multiple == 32
    assert create_model("edsr_tiny_x2").info.task == "sr"


def test_bad_upsample_mode():
    with pytest.raises(ValueError, match="upsample must be"):
        build_registered("unet", upsample="deconv")


@pytest.mark.parametrize("name, kwargs", [
    ("unet", {"base": 4, "depth": 2}),
    ("unet", {"base": 4, "depth": 3, "upsample": "resize"}),
    ("segnet", {"width": 0.05, "levels": ((8, 2), (8, 2), (8, 3))}),
])
def test_analytic_receptive_field_bounds_the_measured_one(name, kwargs):
    torch.manual_seed(0)
    model = build_registered(name, **kwargs).eval()
    measured = probe_receptive_field(model, 1, model.size_multiple, start=128, limit=512)
    assert measured is not None and measured <= model.receptive_field <= measured + 4


def test_seg_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    kwargs = {"base": 4, "depth": 2, "num_classes": 3}
    model = build_registered("unet", **kwargs).eval()
    path = tmp_path / "seg.safetensors"
    save_checkpoint(model, path, name="unet", kwargs=kwargs, training={"threshold": 0.4})
    loaded = create_model(path)
    assert loaded.info.task == "seg" and loaded.info.out_channels == 3 and loaded.info.training["threshold"] == 0.4
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x), rtol=0, atol=0)


def test_resnet34_encoder_weights_from_a_local_file(tmp_path):
    from torchvision.models import resnet34

    torch.manual_seed(0)
    reference = resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    model = build_registered("resnet34_unet")
    n = load_encoder_weights(model, path)
    assert n == len([k for k in reference.state_dict() if not k.startswith("fc.")])
    torch.testing.assert_close(model.layers[2][0].conv1.weight, reference.layer3[0].conv1.weight)
    torch.testing.assert_close(model.stem[1].running_var, reference.bn1.running_var)
    torch.save({"other": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="no ResNet34 encoder weights"):
        load_encoder_weights(model, tmp_path / "bad.pth")


def test_the_resnet34_encoder_computes_what_torchvision_s_does(tmp_path):
    """Our encoder has torchvision's layout: its weight file loads as it is, and the features agree."""
    from torchvision.models import resnet34

    torch.manual_seed(0)
    reference = resnet34(weights=None).eval()
    for m in reference.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    torch.save(reference.state_dict(), tmp_path / "r34.pth")
    model = build_registered("resnet34_unet").eval()
    assert load_encoder_weights(model, tmp_path / "r34.pth") == len(
        [k for k in reference.state_dict() if not k.startswith("fc.")])  # every encoder tensor
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        want = reference.layer4(reference.layer3(reference.layer2(reference.layer1(reference.maxpool(
            reference.relu(reference.bn1(reference.conv1(x))))))))
        got = model.pool(model.stem(x))
        for layer in model.layers:
            got = layer(got)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
