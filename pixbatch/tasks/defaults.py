"""Each task's defaults, declared once: the task classes carry them (``Task.defaults``), the command
line shows them in ``--help`` and builds its windows from them. Torch-free, so ``--help`` and usage
errors never load torch."""

from __future__ import annotations

from pixbatch.runtime.spec import TaskDefaults

# Automatic tiles (whole images when they fit the memory budget), context = the model's receptive field,
# cores cropped (exact), no mirroring at the borders (the model sees what it sees on the whole image).
UPSCALE = TaskDefaults(tile=0, overlap=None, overlap_shown="the model's receptive field", mirror_borders=False,
                       models={2: "rlfn_x2", 3: "rlfn_x3", 4: "rlfn_x4"}, scale=4)

# 896 px cores in 1024 px windows (64 px of context on each side, neighbouring windows share 128 px),
# cores cropped (the shipped U-Net's output is then within 1e-4 of the whole image's), the context
# mirrored beyond the true borders (the overlap-tile strategy U-Nets are trained for).
SEGMENT = TaskDefaults(tile=896, overlap=64, overlap_shown="64", mirror_borders=True, models={1: "unet_drive"})

# Whole images whenever memory allows (instance norm then sees the image as the net was trained to);
# else windows with the receptive field as context. No style net ships: --style is required.
STYLIZE = TaskDefaults(tile=0, overlap=None, overlap_shown="the net's receptive field", mirror_borders=False)
