"""--denoise: the real-photo models blend two shipped endpoints weight by weight."""

import pytest
import torch

from pixbatch.models import (
    UnsupportedModelError,
    builtin_weights,
    create_model,
    denoisable_models,
    denoise_endpoint,
)
from pixbatch.models.checkpoint import read_state_dict


def test_the_real_photo_models_ship_both_endpoints():
    assert denoisable_models() == ["real_x2", "real_x4"]
    for name in denoisable_models():
        one, zero = read_state_dict(builtin_weights(name))[0], read_state_dict(denoise_endpoint(name))[0]
        assert one.keys() == zero.keys() and any(not torch.equal(one[k], zero[k]) for k in one)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_denoise_blends_the_endpoints_linearly(t):
    one, zero = read_state_dict(builtin_weights("real_x4"))[0], read_state_dict(denoise_endpoint("real_x4"))[0]
    loaded = create_model("real_x4", denoise=t)
    got = loaded.module.state_dict()
    assert loaded.info.denoise == t and loaded.info.name == "real_x4" and loaded.info.source == "builtin"
    for k, v in got.items():
        assert torch.allclose(v, zero[k] + t * (one[k] - zero[k]), atol=1e-7), k


def test_the_default_denoise_is_the_middle():
    assert create_model("real_x2").info.denoise == 0.5
    assert create_model("rlfn_x2").info.denoise is None


@pytest.mark.parametrize(("name", "t", "message"), [
    ("rlfn_x4", 0.5, "--denoise works with the built-in models trained for it (real_x2, real_x4), not rlfn_x4"),
    ("real_x4", 1.5, "--denoise must be between 0 and 1, not 1.5"),
])
def test_denoise_elsewhere_is_one_clear_error(name, t, message):
    with pytest.raises(UnsupportedModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_model(name, denoise=t)
