"""A video split at keyframes into spans (what --ray runs on several workers): where it is cut, and that the
spans' frames together are the whole video's, frame for frame."""

from __future__ import annotations

import numpy as np
import pytest

from pixbatch.io.video_parts import split_at_keyframes, split_packets
from tests.conftest import make_clip

av = pytest.importorskip("av")


def test_spans_start_on_keyframes_near_equal_parts_and_cover_every_frame():
    packets = [(t * 10, t % 5 == 0) for t in range(40)]  # a keyframe every 5 frames, no reordering
    spans = split_packets(packets, 3, 4)
    assert [(s.first, s.frames, s.lo, s.hi) for s in spans] == [(0, 15, 0, 150), (15, 10, 150, 250),
                                                                (25, 15, 250, None)]
    assert all((s.index, s.count) == (i, 3) for i, s in enumerate(spans))
    assert split_packets(packets, 2, 4)[1].first == 20


def test_an_open_gop_keyframe_is_not_a_start():
    """Decode order I0 P3 B1 B2 | I6 B4 B5 P9 B7 B8 (the B-frames after I6 show earlier frames: open GOP): no
    cut at I6; with I6 closed (its B-frames after it), the cut is there."""
    open_gop = [(0, True), (3, False), (1, False), (2, False), (6, True), (4, False), (5, False), (9, False),
                (7, False), (8, False)]
    assert split_packets(open_gop, 2, 1) == []
    closed = [(0, True), (3, False), (1, False), (2, False), (4, False), (5, False), (6, True), (9, False),
              (7, False), (8, False)]
    (a, b) = split_packets(closed, 2, 1)
    assert (a.frames, b.first, b.lo, a.hi) == (6, 6, 6, 6)


def test_too_short_unstamped_or_single_spans_are_not_split():
    packets = [(t, t % 5 == 0) for t in range(20)]
    assert split_packets(packets, 2, 11) == []  # each part would have fewer than 11 frames
    assert split_packets(packets, 1, 1) == []
    assert split_packets([(None, True)] + packets[1:], 2, 1) == []
    assert split_packets([(0, True)] + [(1, False)] * 19, 2, 1) == []  # no keyframe but the first


def test_the_spans_frames_are_the_whole_videos(tmp_path):
    """H.264 with B-frames (decode order differs from presentation order), a keyframe every 8 frames,
    VFR: each span read alone (a seek to its keyframe) gives the frames and pts of a whole read."""
    from pixbatch.io.video import VideoReader

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=40, size=(48, 64), vfr=True, gop=8, bframes=2)
    with VideoReader(clip) as reader:
        whole = list(reader.frames())
    spans = split_at_keyframes(clip, 3, 5)
    assert len(spans) == 3 and sum(s.frames for s in spans) == 40
    parts = []
    for span in spans:
        with VideoReader(clip) as reader:
            got = list(reader.frames(span=span))
        assert len(got) == span.frames
        parts += got
    assert [p for _, p in parts] == [p for _, p in whole]
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(parts, whole))
