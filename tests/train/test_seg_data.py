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


def test_random_crop_mirrors_images_far_smaller_than_the_crop():
    """A 512 px crop of a 40 px image (reflect padding of more than the image once raised): mirrored as
    often as it takes, image and mask alike, without repeating the edge pixel."""
    mask = torch.randint(0, 3, (40, 30))
    image = (mask.float() / 2).expand(3, -1, -1)
    img, m = random_crop(image, mask, 512, random.Random(0))
    assert img.shape == (3, 512, 512) and m.shape == (512, 512)
    assert torch.equal((img[0] * 2).round().long(), m)
    row = torch.arange(7.0).expand(3, 1, -1)  # 0..6 along x, one row
    img, _ = random_crop(row, torch.zeros(1, 7, dtype=torch.long), 1, random.Random(0))
    wide, _ = random_crop(row, torch.zeros(1, 7, dtype=torch.long), 16, random.Random(0))
    assert wide[0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3]
    one, _ = random_crop(torch.ones(3, 1, 1), torch.ones(1, 1, dtype=torch.long), 4, random.Random(0))
    assert one.shape == (3, 4, 4) and bool((one == 1).all())
