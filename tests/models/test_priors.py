"""Each family can start its text side from pretrained MiniLM or from scratch (the 2×2 of
family × prior), and VL-JEPA's Y-decoder learns from the predictor's own outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlarena.models.errors import ConfigError
from vlarena.models.registry import build_model, load_model, make_config, save_model
from vlarena.models.y_encoder import MiniLM, ScratchTextEncoder, pca_embeddings
from vlarena.serving.graphs import TextEncoderGraph
from vlarena.training.optim import make_optimizer

TEXTS = ["a shirt on the left and a bag on the right", "a dress above a sandal", "two boots"]


def _modules(model: torch.nn.Module, kind: type) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def test_pca_keeps_the_geometry_of_the_table_at_the_init_scale():
    torch.manual_seed(0)
    table = torch.randn(500, 8) @ torch.diag(torch.tensor([9.0, 5, 3, 1, 1, 1, 1, 1]))
    full = pca_embeddings(table, 8, std=0.02)
    assert full.std().item() == pytest.approx(0.02, rel=1e-3)
    # all components kept: a rotation of the centred table, so distances scale uniformly
    ratio = torch.cdist(full[:50], full[:50]) / torch.cdist(table[:50], table[:50]).clamp(1e-9)
    off = ~torch.eye(50, dtype=torch.bool)
    assert ratio[off].std() / ratio[off].mean() < 1e-4
    # fewer dimensions keep the directions of most variance first
    two = pca_embeddings(table, 2, std=0.02)
    assert abs(torch.corrcoef(torch.stack([two[:, 0], table[:, 0]]))[0, 1]) > 0.95
    # a model wider than the table gets random extra columns at the same scale
    wide = pca_embeddings(table, 12, std=0.02)
    assert torch.allclose(wide[:, :8], full, atol=1e-6)
    assert wide[:, 8:].std().item() == pytest.approx(0.02, rel=0.1)


def test_token_vlm_pretrained_prior_brings_minilm_word_geometry():
    cfg = make_config("token-vlm", {"preset": "tiny", "text_prior": "pretrained"})
    assert cfg.vocabulary == "full"  # the prior's default: every word keeps its embedding
    model = build_model("token-vlm", cfg, TEXTS)
    text = model.text
    assert text.lm_head.weight is text.tok_emb.weight  # input and output tied
    emb = F.normalize(text.tok_emb.weight.detach(), dim=-1)

    def cos(a: str, b: str) -> float:
        (i,), (j,) = (model.vocab.encode(w, bos=False, eos=False) for w in (a, b))
        return float(emb[i] @ emb[j])

    # related words sit closer than unrelated ones, which random embeddings would not give
    assert cos("shirt", "shirts") > cos("shirt", "volcano") + 0.2
    assert cos("left", "right") > cos("left", "banana") + 0.2
    # an unseen word is not [UNK]: the vocabulary holds every word-piece
    assert model.vocab.encode("volcano", bos=False, eos=False) != [model.vocab.unk_id]


def test_token_vlm_scratch_prior_is_random_over_the_captions_vocabulary():
    model = build_model("token-vlm", make_config("token-vlm", {"preset": "tiny"}), TEXTS)
    assert model.cfg.text_prior == "scratch" and model.cfg.vocabulary == "captions"
    assert len(model.vocab) < 100
    assert model.text.lm_head.weight is not model.text.tok_emb.weight


def test_pretrained_token_vlm_saves_and_loads_tied(tmp_path):
    model = build_model(
        "token-vlm", make_config("token-vlm", {"preset": "tiny", "text_prior": "pretrained"}), TEXTS
    )
    with torch.no_grad():
        model.text.tok_emb.weight[5] += 1.0  # trained away from the prior
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    assert loaded.text.lm_head.weight is loaded.text.tok_emb.weight
    assert torch.equal(loaded.text.tok_emb.weight, model.text.tok_emb.weight)


def test_vl_jepa_scratch_prior_trains_its_own_text_encoder_jointly(tmp_path):
    cfg = make_config("vl-jepa", {"preset": "tiny", "text_prior": "scratch"})
    model = build_model("vl-jepa", cfg, TEXTS)
    assert not _modules(model, MiniLM)
    (backbone,) = _modules(model, ScratchTextEncoder)
    assert backbone.out_dim == cfg.d_model  # the preset's own size
    assert model.y_encoder.trainable and model.lr_multipliers() == {}
    assert not any(p.startswith("y_encoder") for p in model.frozen_pretrained_prefixes())
    # the optimiser holds the Y-encoder at the full learning rate
    opt = make_optimizer(model, 1e-3, 0.01, model.lr_multipliers())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"] if g["lr"] == 1e-3}
    assert all(id(p) in in_opt for p in backbone.parameters())
    visual = torch.randn(3, model.x_encoder.num_tokens, model.x_encoder.out_dim)
    loss, _ = model.loss(model.make_batch(visual, TEXTS))
    loss.backward()
    assert backbone.tok_emb.weight.grad is not None and backbone.tok_emb.weight.grad.abs().sum() > 0
    # saved whole (nothing of it is rebuilt from a package on load)
    model.eval()
    loaded = load_model(save_model(model, tmp_path / "j.pt"))
    assert torch.allclose(loaded.encode_text(TEXTS), model.encode_text(TEXTS), atol=1e-6)


def test_target_encoding_costs_the_same_whether_or_not_the_cache_holds_the_texts():
    from vlarena.nn.flops import count_flops

    cfg = make_config("vl-jepa", {"preset": "tiny", "text_prior": "pretrained"})
    model = build_model("vl-jepa", cfg, TEXTS)
    texts = [*TEXTS, "a hat", TEXTS[0]]  # a repeat is encoded once
    first = model.prepare_texts(texts)
    assert all(t in model.y_encoder.cache.memory for t in texts)
    assert model.prepare_texts(texts) == first  # every text a cache hit now
    # each distinct text at its own length, as encoding them one by one counts
    backbone = model.y_encoder.backbone
    one_by_one = sum(count_flops(lambda t=t: backbone([t]))[1] for t in dict.fromkeys(texts))
    assert first == one_by_one > 0
    # a Y-encoder trained from scratch encodes its targets in the training step instead
    scratch = build_model(
        "vl-jepa", make_config("vl-jepa", {"preset": "tiny", "text_prior": "scratch"}), TEXTS
    )
    assert scratch.prepare_texts(texts) == 0


def test_scratch_text_encoder_serves_from_minilm_word_piece_ids():
    model = build_model(
        "vl-jepa", make_config("vl-jepa", {"preset": "tiny", "text_prior": "scratch"}), TEXTS
    ).eval()
    tokenizer = model.vocab.tokenizer
    rows = [[tokenizer.cls_id, *tokenizer.encode(t), tokenizer.sep_id] for t in TEXTS]
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    served = TextEncoderGraph(model.y_encoder)(ids, (ids != 0).long())
    assert torch.allclose(served, model.encode_text(TEXTS), atol=1e-5)


def test_prior_and_y_encoder_rate_conflicts_name_the_field():
    with pytest.raises(ConfigError, match="text_prior"):
        make_config("token-vlm", {"text_prior": "imagenet"})
    with pytest.raises(ConfigError, match="y_lr_mult"):
        make_config("vl-jepa", {"text_prior": "scratch", "y_lr_mult": 0.05})
    with pytest.raises(ConfigError, match="decoder_prediction_share"):
        make_config("vl-jepa", {"decoder_prediction_share": 1.5})


def _jepa(**overrides: object):
    torch.manual_seed(0)
    cfg = make_config("vl-jepa", {"preset": "tiny", "text_prior": "scratch", **overrides})
    return build_model("vl-jepa", cfg, TEXTS)


def test_y_decoder_learns_from_predictions_scaled_to_the_budget():
    model = _jepa()
    visual = torch.randn(4, model.x_encoder.num_tokens, model.x_encoder.out_dim)
    captions = [[TEXTS[0]], [], [TEXTS[1], TEXTS[2]], [TEXTS[2]]]
    stage = model.auxiliary_stage(TEXTS, examples=(visual, captions), samples=640)
    assert stage.steps * stage.batch_size == 640  # as many samples as the predictor saw
    assert stage.prepare_flops > 0  # predicting the three captioned images is counted
    seen: list[torch.Tensor] = []
    original = model.y_decoder.memory
    model.y_decoder.memory = lambda e: (seen.append(e), original(e))[1]  # type: ignore[method-assign]
    loss = stage.loss(torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    batch = seen[0]
    share = round(model.cfg.decoder_batch_size * model.cfg.decoder_prediction_share)
    with torch.no_grad():
        predicted = F.normalize(model.eval().predict_embedding(visual[[0, 2, 3]]), dim=-1)
    # the last `share` rows are the predictor's own embeddings of captioned images
    tail = batch[-share:]
    assert all(torch.isclose(tail @ predicted.T, torch.ones(1), atol=1e-5).any(1))
    # an explicit sample count wins; without examples only targets are used
    fixed = model.auxiliary_stage(TEXTS, samples=640, examples=None)
    assert fixed.prepare_flops == 0
    assert _jepa(decoder_samples=128).auxiliary_stage(TEXTS, samples=640).steps == 2


def test_prediction_cosine_is_the_cosine_to_each_texts_target():
    model = _jepa().eval()
    visual = torch.randn(3, model.x_encoder.num_tokens, model.x_encoder.out_dim)
    cosine = model.prediction_cosine(visual, TEXTS)
    assert cosine is not None and cosine.shape == (3,)
    expected = F.cosine_similarity(model.predict_embedding(visual), model.encode_text(TEXTS))
    assert torch.allclose(cosine, expected, atol=1e-6)
    token = build_model("token-vlm", make_config("token-vlm", {"preset": "tiny"}), TEXTS)
    assert token.prediction_cosine(visual, TEXTS) is None
