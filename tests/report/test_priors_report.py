"""The report shows which cells of the family × prior design a comparison ran."""

from __future__ import annotations

from vlarena.evaluation.report.comparison import PRIOR_CELLS, prior_cells
from vlarena.evaluation.report.page import render_page


def _ran(cells: list[dict]) -> set[tuple[str, str]]:
    return {(c["family"], c["prior"]) for c in cells if c["ran"]}


def test_prior_cells_mark_what_ran_and_read_old_configs_as_the_defaults():
    cells = prior_cells({"token-vlm": {"text_prior": "pretrained"}, "vl-jepa": {}})
    assert len(cells) == len(PRIOR_CELLS) == 4
    assert _ran(cells) == {("token-vlm", "pretrained"), ("vl-jepa", "pretrained")}
    # a config saved before priors existed ran its family's default
    assert _ran(prior_cells({"token-vlm": {}, "vl-jepa": None})) == {
        ("token-vlm", "scratch"),
        ("vl-jepa", "pretrained"),
    }
    assert _ran(prior_cells({"vl-jepa": {"text_prior": "scratch"}})) == {("vl-jepa", "scratch")}


def test_page_shows_the_priors_grid_without_naming_a_fair_cell(tiny_compare):
    html = render_page(tiny_compare["workdir"] / "report")
    section = html[html.index('<section id="priors">') :]
    section = section[: section.index("</section>")]
    assert section.count("<b>ran</b>") == 2 and section.count("not run") == 2
    assert "fair" not in section.lower()
