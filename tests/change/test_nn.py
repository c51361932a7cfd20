"""planetcd.change.nn helpers: match_resolution filters gray-as-RGB once, with the same result."""

import numpy as np
from scipy import ndimage

from planetcd.change.nn import match_resolution


def test_match_resolution_gray_as_rgb_is_the_per_band_filter():
    rng = np.random.default_rng(0)
    gray = rng.random((2, 1, 40, 31)).astype(np.float32)
    rgb = np.repeat(gray, 3, axis=1)
    expected = ndimage.gaussian_filter(rgb, (0, 0, 1.0, 1.0), mode="nearest").astype(np.float32)
    out = match_resolution(rgb, 1.0)
    assert out.dtype == np.float32 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, expected)
    colour = rng.random((1, 3, 20, 20)).astype(np.float32)  # distinct bands: each filtered
    np.testing.assert_array_equal(match_resolution(colour, 1.0),
                                  ndimage.gaussian_filter(colour, (0, 0, 1.0, 1.0), mode="nearest"))
    assert match_resolution(rgb, 0.0) is rgb
