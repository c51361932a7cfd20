"""The benchmark generator on the real test tiles: determinism, label correctness, refusals."""

import hashlib

import numpy as np
import pytest

from planetcd.datasets.benchmark import (
    DEFAULT_TEST_IMAGES,
    PRESETS,
    load_sources,
    make_benchmark,
    write_benchmark,
)
from planetcd.datasets.changeset import read_changeset
from planetcd.errors import InputError


@pytest.fixture(scope="module")
def sources(shared_dir):
    return load_sources(shared_dir=shared_dir)


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(sources, tmp_path):
    for run in ("a", "b"):
        write_benchmark(tmp_path / run, make_benchmark("ctx-impacts", 6, seed=11, sources=sources, patch_size=64))
    first, second = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(first) == 2 * 6 + 3 and first == second
    write_benchmark(tmp_path / "c", make_benchmark("ctx-impacts", 6, seed=12, sources=sources, patch_size=64))
    assert _digests(tmp_path / "c")["labels.csv"] != first["labels.csv"] or \
        _digests(tmp_path / "c")["pre/ctx-impacts-0.png"] != first["pre/ctx-impacts-0.png"]
    back = read_changeset(tmp_path / "a")
    assert back.pre.shape == (6, 1, 64, 64) and back.splits == ["test"] * 6
    assert int(back.labels.sum()) == 3
    # Pair i does not depend on the number of pairs.
    longer = make_benchmark("ctx-impacts", 9, seed=11, sources=sources, patch_size=64)
    shorter = make_benchmark("ctx-impacts", 6, seed=11, sources=sources, patch_size=64)
    same_source = [i for i in range(6) if longer.specs[i].source == shorter.specs[i].source
                   and longer.changeset.labels[i] == shorter.changeset.labels[i]]
    for i in same_source:
        np.testing.assert_array_equal(longer.changeset.post[i], shorter.changeset.post[i])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_changed_pairs_differ_from_their_twin_only_in_the_implant(sources, preset):
    size = 96 if preset != "lroc" else 100
    made = make_benchmark(preset, 8, seed=21, sources=sources, patch_size=size)
    twins = make_benchmark(preset, 8, seed=21, sources=sources, patch_size=size, implants=False)
    cs, tw = made.changeset, twins.changeset
    np.testing.assert_array_equal(cs.labels, tw.labels)
    np.testing.assert_array_equal(cs.pre, tw.pre)  # the pre patch is real (and untouched but by real nuisances)
    diff = np.abs(cs.post.astype(np.int16) - tw.post.astype(np.int16))[:, 0]
    max_shift = PRESETS[preset].max_shift
    for i, spec in enumerate(made.specs):
        source = next(s for s in sources if s.name == spec.source)
        window = source.image[spec.y0 : spec.y0 + size, spec.x0 : spec.x0 + size]
        if PRESETS[preset].real_nuisance:  # pre is the same ground under its own nuisances
            assert np.corrcoef(cs.pre[i, 0].ravel(), window.ravel())[0, 1] > 0.3
            assert np.abs(cs.pre[i, 0] - np.round(window * 255)).mean() > 1.0
        else:
            np.testing.assert_array_equal(cs.pre[i, 0], np.round(window * 255))
        assert abs(spec.dy) <= max_shift and abs(spec.dx) <= max_shift
        # The nuisance alone changes post (shift, gain, gamma, blur, noise) ...
        assert np.abs(tw.post[i, 0].astype(float) - tw.pre[i, 0]).mean() > 1.0
        footprint = made.footprints[i]
        if not cs.labels[i]:
            assert spec.implant == "none" and not footprint.any() and diff[i].max() == 0
            continue
        # ... and the implant changes it only inside its footprint, which sits where the implant was put.
        assert spec.implant in PRESETS[preset].implants
        assert diff[i][~footprint].max(initial=0) <= 1
        assert diff[i][footprint].max() >= 10
        assert footprint[int(spec.y), int(spec.x)]
        # The crater sits on ground pre's patch shows: post pixel y shows pre's ground at y - dy.
        for centre, shift in ((spec.y, spec.dy), (spec.x, spec.dx)):
            assert spec.radius - 1e-6 <= centre - shift <= size - spec.radius + 1e-6
        changed = diff[i] > 3
        rows, cols = np.nonzero(changed)
        assert abs(rows.mean() - spec.y) < 0.35 * size and abs(cols.mean() - spec.x) < 0.35 * size
        if spec.implant != "streaks":
            low, high = PRESETS[preset].crater_radius
            assert low <= spec.radius <= high  # 10-40 px across; small-craters: 6-14 px


def test_presets_mirror_the_published_sets():
    assert (PRESETS["ctx-impacts"].patch_size, PRESETS["ctx-impacts"].max_shift) == (150, 10.0)
    assert (PRESETS["lroc"].patch_size, PRESETS["lroc"].max_shift) == (100, 40.0)
    assert PRESETS["rsl"].patch_size == 100 and PRESETS["rsl"].implants == ("streaks",)
    small = PRESETS["small-craters"]
    assert (small.patch_size, small.max_shift, small.crater_radius) == (150, 20.0, (3.0, 7.0))
    assert PRESETS["real-nuisance"].real_nuisance and not PRESETS["ctx-impacts"].real_nuisance


def test_training_images_are_refused_for_test_sets(shared_dir):
    assert not set(DEFAULT_TEST_IMAGES) & {f"MC11E-{c}" for c in "ABCDEFG"}
    with pytest.raises(InputError, match="trains the crater UNet"):
        load_sources(["MC11E-H", "MC11E-C"], shared_dir=shared_dir)
    allowed = load_sources(["MC11E-C"], shared_dir=shared_dir, allow_training_images=True)
    assert allowed[0].name == "MC11E-C" and len(allowed[0].craters)
    with pytest.raises(InputError, match="not a file nor a known image"):
        load_sources(["MC11E-Z"], shared_dir=shared_dir)
    with pytest.raises(InputError, match="unknown preset"):
        make_benchmark("hirise", 2, sources=allowed)


def test_real_nuisance_relights_from_the_source_sun(sources):
    """Each source's own sun is estimated once and recorded; both dates of a pair are relit from it."""
    assert all(s.sun_azimuth is not None and 0.0 <= s.sun_azimuth < 360.0 for s in sources)
    made = make_benchmark("real-nuisance", 2, seed=4, sources=sources, patch_size=96)
    assert made.params["source_sun_azimuth_deg"] == {s.name: round(s.sun_azimuth, 2) for s in sources}


@pytest.mark.parametrize("preset", ["ctx-impacts", "real-nuisance"])
def test_a_new_crater_is_lit_by_the_sun_of_post(sources, preset):
    """A new crater (a transplanted real one or a rendered fresh one) is shaded as post's ground is: by the
    source's own sun, or with real nuisances by the sun post is relit to (``post_light``). Read from the implant
    alone (post minus its unchanged twin) by the dark inner wall facing the sun."""
    from planetcd.change.nuisance import REAL_NUISANCE
    from planetcd.craters.sun import azimuth_from_craters
    from planetcd.datasets.benchmark import post_light

    made = make_benchmark(preset, 40, seed=5, sources=sources)
    twins = make_benchmark(preset, 40, seed=5, sources=sources, implants=False)
    nuisance = REAL_NUISANCE if PRESETS[preset].real_nuisance else None
    assert made.params["implant_light"] == "post's sun"  # benchmark.json says how the set's craters are lit
    errors = []
    for i, spec in enumerate(made.specs):
        if spec.implant == "none" or spec.radius < 6:
            continue
        light = post_light(spec, next(s for s in sources if s.name == spec.source), nuisance)
        implant = made.changeset.post[i, 0].astype(np.float64) - twins.changeset.post[i, 0]
        azimuth, n = azimuth_from_craters(implant, np.array([[spec.x, spec.y, spec.radius]]))
        if n:
            errors.append(abs((azimuth - light[0] + 180.0) % 360.0 - 180.0))
    assert len(errors) >= 8
    assert np.median(errors) < 15 and np.mean(np.array(errors) < 45) >= 0.85, np.round(errors)
