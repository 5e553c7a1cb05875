"""Each task's defaults are declared once (pixbatch/tasks/defaults.py): the task classes carry them and
every command's --help and options show them."""

import click
import pytest

from pixbatch.cli import cli
from pixbatch.runtime.spec import NoDefaultModelError
from pixbatch.tasks.defaults import SEGMENT, STYLIZE, UPSCALE


def _defaults(path: list[str]) -> dict:
    command = cli
    for name in path:
        command = command.commands[name]
    return {p.name: p.default for p in command.params if isinstance(p, click.Option)}


@pytest.mark.parametrize(("path", "defaults"), [(["upscale"], UPSCALE), (["segment"], SEGMENT),
                                                (["stylize"], STYLIZE)])
def test_every_command_shows_its_tasks_window_defaults(path, defaults):
    shown = _defaults(path)
    assert (shown["tile"], shown["overlap"]) == (defaults.tile, defaults.overlap)


def test_eval_seg_tiles_as_segment_does_and_names_the_same_default_model():
    shown = _defaults(["eval", "seg"])
    assert (shown["tile"], shown["overlap"]) == (SEGMENT.tile, SEGMENT.overlap)
    assert shown["model_name"] == _defaults(["segment"])["model_name"] == SEGMENT.model_for(None)


def test_the_task_classes_carry_the_declared_defaults():
    from pixbatch.tasks.segment import SegmentTask
    from pixbatch.tasks.stylize import StylizeTask
    from pixbatch.tasks.upscale import UpscaleTask

    assert (UpscaleTask.defaults, SegmentTask.defaults, StylizeTask.defaults) == (UPSCALE, SEGMENT, STYLIZE)
    w = SegmentTask.windowing()
    assert (w.tile, w.overlap, w.mirror_borders) == (896, 64, True)
    w = SegmentTask.windowing(512, 0)  # what the user says wins, 0 included
    assert (w.tile, w.overlap) == (512, 0)
    w = UpscaleTask.windowing()
    assert (w.tile, w.overlap, w.mirror_borders) == (0, None, False)


def test_default_models_per_scale_are_built_in_with_weights():
    from pixbatch.models import model_entry

    assert UPSCALE.model_for(None) == UPSCALE.models[UPSCALE.scale] == "rlfn_x4"
    for scale, name in UPSCALE.models.items():
        entry = model_entry(name)
        assert entry.task == "sr" and entry.weights is not None and entry.describe().scale == scale
    assert model_entry(SEGMENT.model_for(None)).task == "seg"
    with pytest.raises(NoDefaultModelError, match="built-in scales are 2, 3, 4"):
        UPSCALE.model_for(8)
