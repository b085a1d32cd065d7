"""Bad and unusual input from the fourteenth reliability hunt, and 12-bit data in 16-bit files."""

import warnings

import numpy as np
import pytest
from PIL import Image

from hf_specdec.images import to_rgb


def _sixteen_bit_png(tmp_path, high: int) -> Image.Image:
    values = np.linspace(0, high, 64, dtype=np.float64).reshape(8, 8).round().astype(np.uint16)
    path = tmp_path / f"scan-{high}.png"
    Image.fromarray(values).save(path)
    return Image.open(path)


@pytest.mark.parametrize("high", [1000, 4095])
def test_twelve_bit_data_in_a_sixteen_bit_file_warns(tmp_path, high):
    """A microscope's 12-bit data stored in a 16-bit PNG is read on the 16-bit scale (as documented): 16x dark. Said."""
    image = _sixteen_bit_png(tmp_path, high)
    assert image.mode.startswith("I")
    with pytest.warns(UserWarning, match="no value above 4095.*12-bit"):
        rgb = to_rgb(image)
    assert np.asarray(rgb).max() == round(high / 257)  # the documented 16-bit scale is kept


@pytest.mark.parametrize("high", [200, 4096, 65535])
def test_sixteen_bit_data_and_8_bit_values_do_not_warn(tmp_path, high):
    image = _sixteen_bit_png(tmp_path, high)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_rgb(image)


def test_a_32_bit_integer_image_of_16_bit_values_below_4096_warns():
    image = Image.fromarray(np.full((4, 4), 3000, dtype=np.int32), mode="I")  # in memory: 16-bit scale read from values
    with pytest.warns(UserWarning, match="no value above 4095"):
        to_rgb(image)
