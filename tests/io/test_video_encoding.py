"""The encoding choices of video outputs, in plain Python (no PyAV): containers, codecs, pixel formats, encoder
options and the --start/--duration window."""

from fractions import Fraction

from pixbatch.io.video_encoding import (
    VideoEncoding,
    encoder_options,
    in_window,
    main_codec,
    main_suffix,
    output_suffix,
    pix_fmt,
    shift,
)


def test_an_output_keeps_its_container_where_the_codec_fits_else_goes_to_matroska():
    assert output_suffix(".MP4", "h264") == ".mp4"
    assert output_suffix(".mp4", "ffv1") == ".mkv"
    assert output_suffix(".webm", "h264") == ".mkv"
    assert output_suffix(".flv", "h264") == ".mkv"  # a container pixbatch does not write


def test_masks_default_to_lossless_ffv1_and_webm_pictures_to_vp9():
    default = VideoEncoding()
    assert main_codec(True, ".mp4", default) == "ffv1" and main_suffix(True, ".mp4", default) == ".mkv"
    assert main_codec(False, ".mp4", default) == "h264" and main_suffix(False, ".mp4", default) == ".mp4"
    assert main_codec(False, ".webm", default) == "vp9"
    assert main_codec(False, ".webm", VideoEncoding(codec="av1")) == "av1"
    assert main_suffix(False, ".mp4", VideoEncoding(frames="png")) == ""  # a folder of frames


def test_odd_sizes_are_written_444_and_deep_sources_at_10_bits():
    assert pix_fmt("h264", 64, 48, 8, mask=False) == "yuv420p"
    assert pix_fmt("h264", 63, 48, 8, mask=False) == "yuv444p"
    assert pix_fmt("h265", 64, 48, 16, mask=False) == "yuv420p10le"
    assert pix_fmt("ffv1", 63, 47, 8, mask=True) == "gray"
    assert pix_fmt("prores", 64, 48, 16, mask=False) == "yuv422p10le"


def test_encoder_options_are_constant_quality_unless_a_bitrate_is_given():
    assert encoder_options("h264", VideoEncoding()) == {"crf": "18", "preset": "medium"}
    assert encoder_options("h264", VideoEncoding(bitrate="8M", preset="fast")) == {"b": "8M", "preset": "fast"}
    assert encoder_options("vp9", VideoEncoding(crf=30)) == {"crf": "30", "b": "0"}  # vp9's constant quality
    assert encoder_options("ffv1", VideoEncoding()) == {"level": "3", "slicecrc": "1"}


def test_the_window_keeps_start_inclusive_end_exclusive_and_shifts_to_zero():
    tb = Fraction(1, 1000)
    window = VideoEncoding(start=1.5, duration=2.0)
    assert [in_window(t, tb, window) for t in (1499, 1500, 3499, 3500)] == [False, True, True, False]
    assert shift(tb, window) == 1500 and shift(tb, VideoEncoding()) == 0
    assert in_window(10**9, tb, VideoEncoding(start=1.0))  # no duration: to the end
