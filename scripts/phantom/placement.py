"""Where each class is placed: AAL3 names, or a region derived from the template."""

from __future__ import annotations

from dataclasses import dataclass

LOBES = {
    "frontal": (
        "Precentral Frontal_Sup_2 Frontal_Mid_2 Frontal_Inf_Oper Frontal_Inf_Tri Frontal_Inf_Orb_2 "
        "Rolandic_Oper Supp_Motor_Area Frontal_Sup_Medial Frontal_Med_Orb Rectus OFCmed OFCant "
        "OFCpost OFClat"
    ),
    "parietal": "Postcentral Parietal_Sup Parietal_Inf SupraMarginal Angular Precuneus",
    "temporal": "Heschl Temporal_Sup Temporal_Pole_Sup Temporal_Mid Temporal_Pole_Mid Temporal_Inf",
    "occipital": "Calcarine Cuneus Lingual Occipital_Sup Occipital_Mid Occipital_Inf",
    "insula": "Insula",
    "basal ganglia": "Caudate Putamen Pallidum",
    "thalamus": (
        "Thalamus Thal_AV Thal_LP Thal_VA Thal_VL Thal_VPL Thal_IL Thal_Re Thal_MDm Thal_MDl "
        "Thal_LGN Thal_MGN Thal_PuI Thal_PuM Thal_PuA Thal_PuL"
    ),
    "cerebellar hemisphere": (
        "Cerebellum_Crus1 Cerebellum_Crus2 Cerebellum_3 Cerebellum_4_5 Cerebellum_6 Cerebellum_7b "
        "Cerebellum_8 Cerebellum_9 Cerebellum_10"
    ),
}


@dataclass(frozen=True)
class Placement:
    """Where a location class puts its lesion(s): one region per lesion, and volume range (mL)."""

    regions: tuple[str, ...]
    volume_ml: tuple[float, float]


def _side(name: str, side: str, volume: tuple[float, float]) -> Placement:
    return Placement((f"{side}:{name}",), volume)


PLACEMENT: dict[str, Placement] = {}
for _side_name, _s in (("Left", "L"), ("Right", "R")):
    PLACEMENT.update(
        {
            f"{_side_name} frontal lobe": _side("frontal", _s, (1.0, 40.0)),
            f"{_side_name} parietal lobe": _side("parietal", _s, (1.0, 40.0)),
            f"{_side_name} temporal lobe": _side("temporal", _s, (1.0, 30.0)),
            f"{_side_name} occipital lobe": _side("occipital", _s, (1.0, 30.0)),
            f"{_side_name} insula": _side("insula", _s, (0.5, 10.0)),
            f"{_side_name} centrum semiovale": _side("centrum semiovale", _s, (0.3, 8.0)),
            f"{_side_name} internal capsule": _side("internal capsule", _s, (0.3, 2.5)),
            f"{_side_name} basal ganglia": _side("basal ganglia", _s, (0.3, 8.0)),
            f"{_side_name} thalamus": _side("thalamus", _s, (0.3, 4.0)),
            f"{_side_name} cerebellar hemisphere": _side("cerebellar hemisphere", _s, (0.5, 20.0)),
            f"{_side_name} pons": _side("pons", _s, (0.3, 2.0)),
        }
    )
PLACEMENT.update(
    {
        "Genu of the corpus callosum": Placement(("M:genu",), (0.3, 2.0)),
        "Splenium of the corpus callosum": Placement(("M:splenium",), (0.3, 2.5)),
        "Left centrum semiovale and right parietal lobe": Placement(
            ("L:centrum semiovale", "R:parietal"), (0.5, 8.0)
        ),
        "Right frontal and parietal lobes": Placement(("R:frontal", "R:parietal"), (1.0, 20.0)),
    }
)
NORMAL = "No acute infarct"
