"""synth anatomy, regions and lesions: each lesion sits in its region, on the right side."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from scipy import ndimage

from daemon.shared.labels import load_label_map
from trainer.synth import anatomy as anatomy_module
from trainer.synth import render, sampling
from trainer.synth.cases import (
    MAX_LESION_ADC_RATIO,
    MIN_LESION_AREA_MM2,
    MIN_LESION_CONTRAST,
    CaseDesign,
    Job,
    design_case,
    plan_cases,
)
from trainer.synth.options import SynthOptions
from trainer.synth.regions import CLASS_REGIONS, GENU, REGION_NAMES, SPLENIUM

if TYPE_CHECKING:
    from pathlib import Path

    from trainer.synth.anatomy import Anatomy

MATRIX = 160


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One anatomy cache for the whole session (built once, a few seconds)."""
    return tmp_path_factory.getbasetemp() / "synth-anatomy-cache"


@pytest.fixture(scope="session")
def anatomy(synth_cache: Path) -> Anatomy:
    loaded, _ = anatomy_module.load_anatomy(synth_cache)
    return loaded


@pytest.fixture(scope="session")
def designs(
    anatomy: Anatomy, tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[Job, CaseDesign]]:
    """Two cases of every class with two slices each, designed (not written)."""
    out = tmp_path_factory.mktemp("unused")
    options = SynthOptions(out_dir=out, cases_per_class=2, slices_per_case=(2, 2), seed=11)
    jobs = [
        Job(plan=plan, seed=11, out_dir=out, matrix=MATRIX, adc=True, want_tile=False)
        for plan in plan_cases(options, load_label_map())
    ]
    return [(job, design_case(anatomy, job)) for job in jobs]


def _slab_regions(anatomy: Anatomy, design: CaseDesign, index: int) -> list[np.ndarray]:
    """Region codes on each sub-plane of a slice's slab (what the lesion mask averages over)."""
    z = design.positions[index - 1]
    return [
        sampling.nearest(
            anatomy.regions, render.plane_voxels(anatomy, design.geometry, design.scan, z + dz)
        )
        for dz in render.sub_plane_offsets(design.scan)
    ]


def _ring(mask: np.ndarray) -> np.ndarray:
    """Pixels 2-4 pixels away from a mask."""
    return ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(mask)


def _world(anatomy: Anatomy, name: str) -> np.ndarray:
    voxels = np.argwhere(anatomy.regions == anatomy.region_code(name))
    return anatomy.voxel_to_world(voxels)


class TestAnatomy:
    def test_every_region_exists_and_is_on_its_side(self, anatomy: Anatomy) -> None:
        """All 24 regions are non-empty; Left regions lie at MNI x < 0, Right ones at x > 0."""
        assert anatomy.region_names == REGION_NAMES
        for name in REGION_NAMES:
            world = _world(anatomy, name)
            assert len(world) > 500, name
            if name.startswith("Left "):
                assert world[:, 0].max() < 0, name
            elif name.startswith("Right "):
                assert world[:, 0].min() > 0, name

    def test_geometric_rules_put_regions_where_anatomy_has_them(self, anatomy: Anatomy) -> None:
        """Pons below the thalamus, CSO above the basal ganglia, genu in front of the splenium."""
        mean_z = {n: _world(anatomy, n)[:, 2].mean() for n in REGION_NAMES}
        assert mean_z["Left pons"] < -20 < mean_z["Left thalamus"]
        assert mean_z["Right centrum semiovale"] > mean_z["Right basal ganglia"] + 20
        assert (
            _world(anatomy, GENU)[:, 1].mean() > 10 > -25 > _world(anatomy, SPLENIUM)[:, 1].mean()
        )
        capsule = _world(anatomy, "Left internal capsule")
        assert -30 < capsule[:, 0].mean() < -12

    def test_tissue_fractions_add_up(self, anatomy: Anatomy) -> None:
        """Grey + white + CSF is at most 1 (x 255, with rounding) and CSF fills the ventricles."""
        total = anatomy.gm.astype(int) + anatomy.wm + anatomy.csf
        assert total.max() <= 256
        inside = anatomy.ventricle_distance == 0
        assert inside.sum() > 2000
        assert anatomy.csf[inside].mean() > 200

    def test_cache_is_reused(self, synth_cache: Path, anatomy: Anatomy) -> None:
        """A second load reads the cached .npz instead of rebuilding; same arrays, same key."""
        again, path = anatomy_module.load_anatomy(synth_cache)
        assert path is not None
        assert path.name == f"synth-anatomy-{anatomy.key}.npz"
        assert again.key == anatomy.key
        assert np.array_equal(again.regions, anatomy.regions)


class TestLesions:
    def test_lesions_lie_inside_their_region_and_tissue(
        self, anatomy: Anatomy, designs: list[tuple[Job, CaseDesign]]
    ) -> None:
        """Every lesion voxel is in the lesion's region, in tissue, never in a ventricle."""
        for job, design in designs:
            for lesion in design.lesions:
                voxels = np.argwhere(lesion.fraction > 0) + lesion.origin
                index = tuple(voxels.T)
                assert (anatomy.regions[index] == anatomy.region_code(lesion.region)).all()
                assert (anatomy.gm[index].astype(int) + anatomy.wm[index] >= 128).all()
                assert (anatomy.ventricle_distance[index] > 0).all(), job.plan.case_id

    def test_each_class_has_the_lesions_it_names(
        self, designs: list[tuple[Job, CaseDesign]]
    ) -> None:
        """One lesion per named region; two for the two-lesion classes; none for normal cases."""
        for job, design in designs:
            assert (
                tuple(lesion.region for lesion in design.lesions) == CLASS_REGIONS[job.plan.label]
            )
        labels = {job.plan.label: len(design.lesions) for job, design in designs}
        assert labels["No acute infarct"] == 0
        assert labels["Left centrum semiovale and right parietal lobe"] == 2
        assert labels["Right frontal and parietal lobes"] == 2

    def test_every_slice_shows_every_lesion_in_its_region(
        self, anatomy: Anatomy, designs: list[tuple[Job, CaseDesign]]
    ) -> None:
        """Each slice of a lesion case cuts each lesion visibly, mostly over that region."""
        for job, design in designs:
            for index in range(1, len(design.positions) + 1):
                rendered = design.render(anatomy, job, index)
                planes = _slab_regions(anatomy, design, index)
                for lesion, mask in zip(design.lesions, rendered.lesions, strict=True):
                    area = mask.sum() * rendered.pixel_mm**2
                    assert area >= MIN_LESION_AREA_MM2 * 0.99, (job.plan.case_id, index)
                    code = anatomy.region_code(lesion.region)
                    inside = np.any([plane[mask] == code for plane in planes], axis=0)
                    assert inside.mean() > 0.9, (job.plan.case_id, lesion.region, inside.mean())

    def test_laterality_right_lesions_on_the_image_left(
        self, anatomy: Anatomy, designs: list[tuple[Job, CaseDesign]]
    ) -> None:
        """Radiological display: every pixel of a Right lesion lies on the patient's right of the
        midsagittal plane, which is the image's left; a lesion well off the midline (>= 15 mm)
        has its centre on the image's left half. Left the other way round."""
        checked = lateral = 0
        for job, design in designs:
            rendered = design.render(anatomy, job, 1)
            points = render.plane_points(design.scan, design.positions[0])
            mni_x = design.geometry.to_mni(points)[..., 0]
            for lesion, mask in zip(design.lesions, rendered.lesions, strict=True):
                side = lesion.region.split(" ", 1)[0]
                if side not in ("Left", "Right"):
                    continue
                sign = 1.0 if side == "Right" else -1.0
                assert (sign * mni_x[mask] > -0.5).all(), (job.plan.case_id, lesion.region)
                checked += 1
                # the image halves split the patient only when the head lies nearly straight
                if abs(mni_x[mask].mean()) >= 15 and abs(design.geometry.yaw_deg) <= 7:
                    centre_column = np.nonzero(mask)[1].mean()
                    on_left = centre_column < mask.shape[1] / 2
                    assert on_left == (side == "Right"), (job.plan.case_id, lesion.region)
                    lateral += 1
        assert checked >= 44
        assert lateral >= 20  # heads within 7 degrees of straight (60 % of them)

    def test_lesion_is_bright_on_b1000_and_dark_on_adc(
        self, anatomy: Anatomy, designs: list[tuple[Job, CaseDesign]]
    ) -> None:
        """Against a ring of surrounding brain, lesions are hyperintense on b1000 (clearly before
        noise, visibly after) and their ADC is lower (acute restricted diffusion)."""
        for job, design in designs:
            if not design.lesions:
                continue
            views = render.lesion_views(
                anatomy, design.geometry, design.scan, design.lesions, design.positions[0]
            )
            assert all(view.contrast >= MIN_LESION_CONTRAST for view in views)
            assert all(view.adc_ratio <= MAX_LESION_ADC_RATIO for view in views)
            rendered = design.render(anatomy, job, 1)
            for mask in rendered.lesions:
                ring = _ring(mask) & (rendered.adc > 0.3) & (rendered.adc < 1.5)  # tissue, no CSF
                assert rendered.b1000[mask].mean() > 1.15 * rendered.b1000[ring].mean()
                assert rendered.adc[mask].mean() < 0.85 * rendered.adc[ring].mean(), (
                    job.plan.case_id
                )

    def test_normal_cases_spread_over_the_brain(
        self, anatomy: Anatomy, designs: list[tuple[Job, CaseDesign]]
    ) -> None:
        """'No acute infarct' slices are not confined to one level and show no lesion."""
        normal = [(j, d) for j, d in designs if j.plan.label == "No acute infarct"]
        levels = [d.render(anatomy, j, i).z_mni for j, d in normal for i in (1, 2)]
        assert max(levels) - min(levels) > 20
        assert all(not d.lesions for _, d in normal)
