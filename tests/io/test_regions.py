import numpy as np
import pytest
import tifffile

from pixbatch.io.regions import OUT_TILE, TiffRegionReader, TiledTiffWriter, is_tiled_tiff
from tests.conftest import gradient_rgb


@pytest.mark.parametrize("layout", [{"tile": (64, 48)}, {"rowsperstrip": 10}])
@pytest.mark.parametrize("channels", [1, 3])
def test_region_reader_returns_exact_rows(tmp_path, layout, channels):
    img = gradient_rgb(300, 250, seed=1)[:, :, :channels]
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, img[:, :, 0] if channels == 1 else img, compression="zlib",
                     photometric="minisblack" if channels == 1 else "rgb", **layout)
    assert is_tiled_tiff(path) == ("tile" in layout)
    reader = TiffRegionReader(path)
    assert (reader.height, reader.width, reader.channels) == (300, 250, channels)
    for y0, y1 in [(0, 1), (0, 300), (63, 65), (129, 257), (299, 300)]:
        np.testing.assert_array_equal(reader.read_rows(y0, y1), img[y0:y1])
    reader.close()


def test_region_reader_decodes_only_the_tiles_it_is_asked_for(tmp_path):
    img = gradient_rgb(640, 512, seed=2)
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, img, tile=(128, 128), photometric="rgb")
    reader = TiffRegionReader(path)
    reader.read_rows(130, 200)  # one row of tiles: 4 tiles across
    assert reader.segments_decoded == 4
    reader.read_rows(150, 300)  # the cached row plus the next one
    assert reader.segments_decoded == 8
    reader.read_rows(300, 400)
    assert reader.segments_decoded == 12
    assert sorted(reader.cache) == [2, 3]  # rows of tiles behind the reader are dropped
    reader.close()


@pytest.mark.parametrize("shape, dtype", [((300, 530, 1), np.uint8), ((257, 256, 3), np.uint8),
                                          ((40, 70, 2), np.float32)])
def test_tiled_writer_round_trip(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    img = (rng.random(shape) * 255).astype(dtype)
    path = tmp_path / "out.tif"
    writer = TiledTiffWriter(path, shape[0], shape[1], shape[2], dtype,
                             photometric="rgb" if shape[2] == 3 else "minisblack")
    for y in range(0, shape[0], 37):  # bands of any height
        writer.push(img[y:y + 37])
    writer.close()
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        assert tf.is_bigtiff and page.is_tiled and page.tilewidth == OUT_TILE
        back = page.asarray()
    np.testing.assert_array_equal(back.reshape(shape), img)


def test_tiled_writer_refuses_an_incomplete_image(tmp_path):
    writer = TiledTiffWriter(tmp_path / "out.tif", 100, 10, 1, np.uint8, photometric="minisblack")
    writer.push(np.zeros((50, 10, 1), np.uint8))
    with pytest.raises(RuntimeError, match="got 50 of 100 rows"):
        writer.close()
