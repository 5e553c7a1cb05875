import random

import torch

from pixbatch.train.seg_data import augment, random_crop


def test_augment_moves_image_and_mask_together():
    """The image is the mask itself: after any geometric augmentation they still agree (nearest
    resampling keeps the mask's classes; lighting changes only the image)."""
    mask = torch.zeros(40, 40, dtype=torch.long)
    mask[5:20, 8:30] = 1
    mask[25:35, 2:9] = 2
    image = (mask.float() / 2).expand(3, -1, -1)
    for seed in range(20):
        img, m = augment(image, mask, random.Random(seed), rotate_deg=0, lighting=0)
        assert torch.equal((img[0] * 2).round().long(), m)
        img, m = augment(image, mask, random.Random(seed), rotate_deg=10, lighting=0)
        assert set(m.unique().tolist()) <= {0, 1, 2}
        agree = ((img[0] * 2).round().long() == m).float().mean()
        assert agree > 0.95  # bilinear vs nearest differ only along edges
        img, m = augment(image, mask, random.Random(seed), rotate_deg=0, lighting=0.3)
        assert img.min() >= 0 and img.max() <= 1


def test_random_crop_pads_small_images():
    image, mask = torch.rand(3, 10, 12), torch.randint(0, 2, (10, 12))
    img, m = random_crop(image, mask, 16, random.Random(0))
    assert img.shape == (3, 16, 16) and m.shape == (16, 16)
    img, m = random_crop(image, mask, 8, random.Random(0))
    assert img.shape == (3, 8, 8)
