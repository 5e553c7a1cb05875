import pickle

import pytest
import torch

from pixbatch.models import (
    UnknownModelError,
    UnsupportedModelError,
    build_registered,
    create_model,
    list_models,
    model_entry,
)
from pixbatch.models.checkpoint import save_checkpoint
from pixbatch.models.foreign.spandrel_loader import probe_receptive_field
from tests.conftest import COMPACT, requires_data

SMALL = {"imdn": {"nf": 64, "num_modules": 1}, "carn": {"channels": 16},  # per family; default below
         "unet": {"base": 4, "depth": 2}, "segnet": {"width": 0.05}, "resnet34": {},
         "johnson": {"width": 4}, "engstrom": {}, "mobilenet": {},
         "rlfn": {"feature_channels": 8, "mid_channels": 8, "n_blocks": 1, "esa_channels": 4},
         "bsrn": {"num_feat": 64, "num_block": 1}, "safmn": {"dim": 8, "n_blocks": 1}, "safmnpp": {"dim": 6, "n_blocks": 1},
         "smfan": {"dim": 8, "n_blocks": 1}, "span": {"feature_channels": 8, "n_blocks": 2}}


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_and_trains(name):
    torch.manual_seed(0)
    default = SMALL.get(model_entry(name).family, {"n_resblocks": 1, "n_feats": 8})  # real_x4: an rlfn
    small = SMALL.get(name.split("_")[0], default)  # every code path, at test size
    model = build_registered(name, **small)
    h, w = (8, 12) if getattr(model, "task", "sr") == "style" else (7, 9)  # style nets need multiples of their two strides
    h, w = max(h, getattr(model, "min_size", 1)), max(w, getattr(model, "min_size", 1) + 2)  # pooling attention
    x = torch.rand(2, 3, h, w)
    y = model(x)
    s = model.scale
    assert y.shape == (2, getattr(model, "out_channels", 3), h * s, w * s) and torch.isfinite(y).all()
    y.square().mean().backward()
    # frozen parameters (CARN-M's mean shift) and the other scales' branches of a multi-scale upsampler
    # (CARN-M) are not expected to learn here
    unused = {f"upsample.up{k}." for k in (2, 3, 4) if k != s} if name.startswith("carn_m") else set()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and not n.startswith(tuple(unused)) and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing


def test_list_models_filters():
    assert list_models("edsr_baseline*") == ["edsr_baseline_x2", "edsr_baseline_x3", "edsr_baseline_x4",
                                             "edsr_baseline_x8"]


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean edsr_tiny_x4"):
        create_model("edsr_tiny_x5")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    kwargs = {"n_resblocks": 2, "n_feats": 16}
    model = build_registered("edsr_tiny_x3", **kwargs).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, name="edsr_tiny_x3", kwargs=kwargs, training={"steps": 7})
    loaded = create_model(path)
    assert loaded.info.source == "checkpoint" and loaded.info.scale == 3 and loaded.info.training == {"steps": 7}
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x), rtol=0, atol=0)


def test_untrained_builtin_is_reported_as_such():
    assert create_model("edsr_baseline_x4").info.source == "untrained"


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w').write('x')",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": Evil()}, f)
    with pytest.raises(UnsupportedModelError, match="cannot be read as plain weights"):
        create_model(path)
    assert not (tmp_path / "pwned").exists()


def test_unrecognised_state_dict(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"some.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(UnsupportedModelError, match="unrecognised architecture"):
        create_model(path)


def test_analytic_receptive_field_bounds_the_measured_one():
    model = build_registered("edsr_tiny_x4", n_resblocks=2, n_feats=8).eval()
    measured = probe_receptive_field(model, 4)
    assert measured is not None and measured <= model.receptive_field <= measured + 1


@requires_data
def test_foreign_compact_model_is_recognised():
    info = create_model(COMPACT).info
    assert info.source == "foreign" and info.arch == "RealESRGAN Compact"
    assert (info.scale, info.in_channels, info.out_channels, info.size_multiple) == (4, 3, 3, 1)
    assert info.receptive_field == 18 and info.supports_bf16


def test_carn_m_is_one_model_for_every_scale(tmp_path):
    """A checkpoint in the original key layout (plain state dict) is recognised, and the scale is
    chosen at load time from the same weights."""
    torch.manual_seed(0)
    model = build_registered("carn_m_x4").eval()
    path = tmp_path / "carn_m.pth"
    torch.save(model.state_dict(), path)
    assert {"entry.weight", "b1.b1.body.0.weight", "upsample.up3.body.0.weight", "sub_mean.shifter.bias"} <= set(
        model.state_dict())
    x = torch.rand(1, 3, 6, 7)
    for scale in (2, 3, 4):
        loaded = create_model(path, scale=scale)
        assert loaded.info.arch == "CARNM" and loaded.info.scale == scale and loaded.info.recognised_by == "pixbatch"
        model.scale = scale
        with torch.no_grad():
            torch.testing.assert_close(loaded.module(x), model(x), rtol=0, atol=0)
    assert create_model(path).info.scale == 4


def test_imdn_keys_with_module_prefix_are_recognised(tmp_path):
    torch.manual_seed(0)
    model = build_registered("imdn_x3", nf=64, num_modules=2).eval()
    path = tmp_path / "imdn.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded = create_model(path)
    assert loaded.info.arch == "IMDN" and loaded.info.scale == 3 and loaded.info.receptive_field is None
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x), rtol=0, atol=0)


def test_registry_records_task_family_and_weights_without_building():
    from pixbatch.models import model_entry
    from pixbatch.models.recognisers import RECOGNISERS

    sr, seg = model_entry("edsr_tiny_x4"), model_entry("unet_drive")
    assert (sr.task, sr.family, seg.task, seg.family) == ("sr", "edsr", "seg", "unet")
    assert sr.weights is not None and model_entry("edsr_x4").weights is None
    assert sr.value_range == (0.0, 1.0)
    assert {arch for arch, _ in RECOGNISERS} == {  # one ordered list of every family's recogniser
        "IMDN", "CARN-M", "BSRN", "RLFN", "SAFMN", "SMFAN", "SPAN", "TransformerNet (PyTorch fast_neural_style)",
        "fast-style-transfer (Engstrom, TensorFlow variables)",
        "TransformerMobileNet (pytorch-fast-neural-style-mobilenetV2)"}
    assert model_entry("johnson_style").task == "style"
    with pytest.raises(UnknownModelError, match="edsr_tiny_x4"):
        model_entry("edsr_tiny_x5")


def test_the_registry_describes_every_variant_as_building_it_does():
    """What `pixbatch models` prints (the registry's description, built on the meta device) is what a
    real build of the variant declares."""
    from pixbatch.models import list_models, model_entry
    from pixbatch.models.info import ImageModel, describe_native

    for name in list_models():
        entry = model_entry(name)
        assert issubclass(entry.arch, ImageModel) and entry.task == entry.arch.task, name
        described = entry.describe()
        assert (described.name, described.arch, described.task) == (name, entry.arch.__name__, entry.task)
    for name in ("edsr_tiny_x3", "rlfn_x4", "unet_drive", "johnson_style", "carn_m_x2"):
        module = model_entry(name).build()
        built = describe_native(name, module, source=model_entry(name).describe().source)
        assert built == model_entry(name).describe(), name


def test_a_variant_must_name_the_architecture_it_builds():
    from torch import nn

    from pixbatch.models import register_model

    def not_annotated(**kw):
        return nn.Identity()

    def not_an_image_model(**kw) -> nn.Identity:
        return nn.Identity()

    for fn in (not_annotated, not_an_image_model):
        with pytest.raises(TypeError, match="ImageModel"):
            register_model(fn)
