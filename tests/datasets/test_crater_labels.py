"""Crater label readers: the (n, 3) x, y, radius contract on real and synthetic files."""

from __future__ import annotations

import numpy as np
import pytest

from planetcd.datasets.crater_labels import read_pixel_csv, read_pycda_csv, read_robbins_csv, read_voc_boxes
from planetcd.errors import InputError

VOC = """<annotation><size><width>100</width><height>80</height></size>
<object><name>crater</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>20</xmax><ymax>26</ymax></bndbox></object>
<object><name>crater</name><bndbox><xmin>50</xmin><ymin>50</ymin><xmax>58</xmax><ymax>58</ymax></bndbox></object>
</annotation>"""


def test_voc_centre_is_box_centre_and_radius_is_mean_half_side(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(VOC)
    craters = read_voc_boxes(path)
    assert craters.dtype == np.float64 and craters.shape == (2, 3)
    np.testing.assert_allclose(craters[0], [15.0, 23.0, (10 + 6) / 4])
    np.testing.assert_allclose(craters[1], [54.0, 54.0, 4.0])


def test_voc_without_objects_is_empty_not_an_error(tmp_path):
    path = tmp_path / "empty.xml"
    path.write_text("<annotation><size><width>4</width></size></annotation>")
    assert read_voc_boxes(path).shape == (0, 3)


@pytest.mark.parametrize(
    "text", ["<annotation><object><bndbox><xmin>a</xmin></bndbox></object></annotation>", "<annotation>", "<foo/>"]
)
def test_voc_garbled_raises_input_error(tmp_path, text):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(InputError):
        read_voc_boxes(path)


def test_missing_files_raise_input_error(tmp_path):
    for reader in (read_voc_boxes, read_pycda_csv, read_robbins_csv):
        with pytest.raises(InputError, match="no such file"):
            reader(tmp_path / "nothing.csv")


def test_pycda_diameter_is_halved_and_cr_line_endings_read(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"long,lat,diameter\r1.5,2.5,8\r3,4,5\r")
    np.testing.assert_allclose(read_pycda_csv(path), [[1.5, 2.5, 4.0], [3.0, 4.0, 2.5]])


def test_csv_missing_column_or_text_value_raises(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("x,y,d\n1,2,3\n")
    with pytest.raises(InputError, match="missing column"):
        read_pycda_csv(path)
    path.write_text("long,lat,diameter\n1,2,three\n")
    with pytest.raises(InputError, match="line 2"):
        read_pycda_csv(path)
    with pytest.raises(ValueError):
        read_pixel_csv(path, "long", "lat")


def test_real_label_files(shared_dir):
    data = shared_dir / "data"
    # Counts documented in shared/README.md.
    expected = {"A": 1182, "B": 196, "C": 269, "D": 112, "E": 1042, "F": 372, "G": 72, "H": 60, "I": 325}
    for letter, count in expected.items():
        craters = read_voc_boxes(data / "ctx-mc11e" / "annotations" / "clustered" / f"MC11E-{letter}.xml")
        assert craters.shape == (count, 3)
        assert np.all((craters[:, :2] >= 0) & (craters[:, :2] <= 2000)) and np.all(craters[:, 2] > 0)
    pycda = read_pycda_csv(data / "hrsc-pycda" / "holdout_tile_labels.csv")
    assert pycda.shape == (409, 3)
    assert 2 <= pycda[:, 2].min() and pycda[:, 2].max() <= 40
    robbins = read_robbins_csv(next((data / "robbins-themis").glob("CSV_Tile_00_*_px.csv")))
    assert robbins.shape[1] == 3 and len(robbins) > 1000
    assert np.all((robbins[:, :2] >= 0) & (robbins[:, :2] <= 7680))
