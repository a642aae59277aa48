"""The report's colours, shared by its static figures and its interactive plots."""

from __future__ import annotations

FAMILY_COLOURS = ("#3b6fb6", "#d1495b", "#2e9e6b", "#e09f3e")
# Tableau 10: distinguishable categories (embedding maps, segments)
CATEGORY_COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)

# The selective-decoding curves: result key → (legend name, colour).
SELECTIVE_CURVES = {
    "uniform": ("uniform", "#777"),
    "selective": ("selective", "#d1495b"),
    "rawFeature": ("raw-feature segmentation", "#edae49"),
}


def family_colour(families: list[str], family: str) -> str:
    """A family's colour: by its place among the report's families."""
    return FAMILY_COLOURS[families.index(family) % len(FAMILY_COLOURS)]
