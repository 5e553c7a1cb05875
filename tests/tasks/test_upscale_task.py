import torch

from pixbatch.models import create_model
from pixbatch.runtime.prepare import prepare_model
from pixbatch.tasks.upscale import pixels_from_planes, planes_from_pixels, upscale_tensor


def test_alpha_is_premultiplied_so_edges_keep_their_colour():
    """A white shape on transparent black: a bilinear 'model' must not darken its soft edge."""

    class Bilinear(torch.nn.Module):
        scale = 2

        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    loaded = create_model("edsr_tiny_x2", pretrained=False, n_resblocks=1, n_feats=8)
    loaded.module = Bilinear()
    runner = prepare_model(loaded, torch.device("cpu"), torch.float32)
    rgba = torch.zeros(8, 8, 4, dtype=torch.uint8)
    rgba[:, 4:] = 255  # right half opaque white, left half transparent black
    y = upscale_tensor(runner, planes_from_pixels(rgba, 8))
    out = pixels_from_planes(y, "RGBA", 8)
    visible = out[..., 3] > 0
    assert bool(visible.any()) and int(out[..., :3][visible].min()) >= 254
    # whereas upscaling straight (non-premultiplied) colour darkens the edge
    straight = upscale_tensor(runner, rgba[..., :3].permute(2, 0, 1).float().div(255)[None])
    assert float(straight[0][:, visible].min()) < 0.9


def test_sixteen_bit_round_trip_keeps_full_precision():
    px = torch.tensor([[[0, 1, 65534, 65535]]], dtype=torch.int32).expand(2, 2, 4)[..., :3]
    planes = planes_from_pixels(px, 16)
    assert planes.dtype == torch.float32 and planes.shape == (1, 3, 2, 2)
    torch.testing.assert_close(pixels_from_planes(planes, "RGB", 16), px, rtol=0, atol=0)
