"""Both model families behave as the evaluation and export code expect of them."""

from __future__ import annotations

import math

import pytest
import torch

from vlarena.models.errors import ConfigError, ModelFileError
from vlarena.models.losses import InfoNCE
from vlarena.models.registry import build_model, load_model, make_config, save_model
from vlarena.models.vl_jepa import text_ids

FAMILIES = ("token-vlm", "vl-jepa")


@pytest.mark.parametrize(("family", "floor"), [("token-vlm", 3 / 16), ("vl-jepa", 0.5)])
def test_trained_model_ranks_the_true_caption_first(
    family, floor, tiny_models, tiny_splits, tiny_test_visual
):
    model = tiny_models[family]
    captions = tiny_splits.test.captions()[:16]
    scores = model.score_candidates(tiny_test_visual[:16], captions)
    assert scores.shape == (16, 16)
    # the true caption (the diagonal) ranks first well above chance (1/16)
    hits = (scores.argmax(1) == torch.arange(16)).float().mean().item()
    assert hits >= floor, hits


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_run_learns_far_above_chance(family, tiny_compare):
    seed = tiny_compare["metrics"]["families"][family]["seeds"][0]
    for name in ("caption_of_10", "i2t_r1@32", "zeroshot_top1"):
        assert seed["metrics"][name]["z"] >= 3, (name, seed["metrics"][name])


def test_infonce_of_tiny_run_ends_below_half_log_batch(tiny_compare):
    seeds = tiny_compare["metrics"]["families"]["vl-jepa"]["seeds"]
    assert seeds[0]["finalLoss"] <= 0.5 * math.log(32)


def test_infonce_is_symmetric_in_its_two_directions():
    torch.manual_seed(0)
    loss = InfoNCE()
    a, b = torch.randn(8, 16), torch.randn(8, 16)
    ids = torch.tensor([0, 1, 2, 3, 4, 5, 6, 1])  # a repeated text: soft positives
    forward, _ = loss(a, b, ids)
    swapped, _ = loss(b, a, ids)
    assert torch.allclose(forward, swapped, atol=1e-6)
    # perfect alignment of distinct texts scores lower than random pairs
    aligned, _ = loss(a, a, torch.arange(8))
    assert aligned < forward


def test_infonce_temperature_is_learnable_and_clamped():
    loss = InfoNCE(init_temperature=0.07, max_scale=100.0)
    assert loss.scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        loss.logit_scale.fill_(10.0)
    assert loss.scale.item() == pytest.approx(100.0, rel=1e-5)
    assert loss.logit_scale.requires_grad


def test_text_ids_mark_equal_texts_only():
    ids = text_ids(["a bag", "a shirt", "a bag"])
    assert ids[0] == ids[2] and ids[0] != ids[1]


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_returns_text_for_every_image_and_question(
    family, tiny_models, tiny_test_visual
):
    model = tiny_models[family]
    texts = model.generate(
        tiny_test_visual[:4],
        ["what is at the top left?", None, None, "what is at the bottom right?"],
    )
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    assert any(t for t in texts)


def test_token_vlm_cached_greedy_decoding_matches_full_recomputation(tiny_models, tiny_test_visual):
    model = tiny_models["token-vlm"]
    text = model.text
    memory = model.memory(tiny_test_visual[:3])
    cached, _ = text.generate(memory, max_len=12)
    ids = torch.full((3, 1), text.vocab.bos_id)
    with torch.no_grad():
        for _ in range(12):
            logits, _ = text(ids, memory)
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    uncached = [text.vocab.decode(row[1:].tolist()) for row in ids]
    assert cached == uncached


def test_token_vlm_beam_search_scores_at_least_greedy(tiny_models, tiny_test_visual):
    model = tiny_models["token-vlm"]
    visual = tiny_test_visual[:4]
    greedy = model.generate(visual)
    beam = model.generate(visual, beam_size=4)
    # the beam's choice is at least as likely (length-normalised) as the greedy path
    for i in range(4):
        s = model.score_candidates(visual[i : i + 1], [greedy[i], beam[i]])[0]
        assert s[1] >= s[0] - 1e-4


def test_token_vlm_attention_maps_cover_visual_tokens(tiny_models, tiny_test_visual):
    model = tiny_models["token-vlm"]
    _texts, maps = model.generate(tiny_test_visual[:2], return_attention=True)
    assert len(maps) == 2
    for m in maps:
        assert m.shape[1] == model.x_encoder.num_tokens
        assert torch.allclose(m.sum(-1), torch.ones(m.shape[0]), atol=1e-4)
    with pytest.raises(ValueError, match="greedy"):
        model.generate(tiny_test_visual[:1], beam_size=2, return_attention=True)


def test_saved_model_loads_back_with_identical_predictions(tiny_models, tiny_test_visual, tmp_path):
    for family, model in tiny_models.items():
        path = save_model(model, tmp_path / f"{family}.pt")
        again = load_model(path)
        cands = ["a bag top left, a coat top right, a shirt bottom left, a dress bottom right"]
        assert torch.allclose(
            model.score_candidates(tiny_test_visual[:2], cands),
            again.score_candidates(tiny_test_visual[:2], cands),
            atol=1e-6,
        )


def test_full_vocabulary_model_is_much_larger_than_caption_vocabulary():
    texts = ["a bag top left", "what is at the top left?", "a bag"]
    small = build_model("token-vlm", make_config("token-vlm", {"preset": "tiny"}), texts)
    full = build_model(
        "token-vlm", make_config("token-vlm", {"preset": "tiny", "vocabulary": "full"}), texts
    )
    assert len(full.vocab) == 30522 and len(small.vocab) < 20
    assert full.count_parameters() > 10 * small.count_parameters()


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="unknown field of TokenVLMConfig") as caught:
        make_config("token-vlm", {"layers": 3})
    assert caught.value.field == "model.config.layers"
    with pytest.raises(ConfigError, match="x_encoder") as caught:
        make_config("token-vlm", {"x_encoder": {"nam": "vit"}})
    assert caught.value.field == "model.config.x_encoder.nam"
    with pytest.raises(ConfigError, match="unknown model family"):
        make_config("gpt", {})
    with pytest.raises(ConfigError, match="preset"):
        make_config("vl-jepa", {"preset": "huge"})


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_model_file_that_runs_code_when_loaded_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "model.pt"
    torch.save({"family": "vl-jepa", "payload": _RunsCodeWhenUnpickled(str(marker))}, evil)
    with pytest.raises(ModelFileError, match="not a vlarena model file"):
        load_model(evil)
    assert not marker.exists()


def test_vl_jepa_encodes_each_distinct_candidate_once(tiny_models, tiny_splits, tiny_test_visual):
    model = tiny_models["vl-jepa"]
    captions = tiny_splits.test.captions()[:6]
    rows = [captions[:4], captions[2:6], captions[:4]]  # shared and repeated candidates
    encoded: list[int] = []
    encode = model.encode_text

    def counting(texts):
        encoded.append(len(texts))
        return encode(texts)

    model.encode_text = counting
    try:
        scores = model.score_candidates(tiny_test_visual[:3], rows)
    finally:
        del model.encode_text
    assert encoded == [len(set(captions))]
    for i, row in enumerate(rows):
        alone = model.score_candidates(tiny_test_visual[i : i + 1], row)[0]
        torch.testing.assert_close(scores[i], alone, atol=1e-5, rtol=0)
