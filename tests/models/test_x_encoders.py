"""X-encoders: the pretrained EfficientNet (eager and through onnxruntime), the ViT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlarena.experiments.features import encode_images
from vlarena.models.errors import ConfigError
from vlarena.models.x_encoders import XEncoderConfig, build_x_encoder


def test_efficientnet_is_frozen_and_gives_4x4_tokens_at_128px():
    enc = build_x_encoder(XEncoderConfig())
    enc.train()
    assert enc.frozen and not enc.backbone.training
    assert all(not p.requires_grad for p in enc.parameters())
    out = enc(torch.zeros(2, 3, 128, 128))
    assert out.shape == (2, 16, 1280) and enc.num_tokens == 16


def test_onnxruntime_features_match_eager_pytorch(tiny_splits):
    enc = build_x_encoder(XEncoderConfig())
    paths = [r.image for r in tiny_splits.test.records[:4]]
    fast = encode_images(enc, paths).astype(np.float32)
    images = torch.from_numpy(tiny_splits.test.load_images(128)[:4])
    eager = enc(images).numpy()
    # features are stored in fp16: agree to its precision
    assert np.abs(fast - eager).max() <= 1e-2 * max(1.0, np.abs(eager).max())


def test_vit_trains_from_scratch():
    enc = build_x_encoder(
        XEncoderConfig(
            name="vit", image_size=32, patch_size=8, vit_dim=32, vit_layers=1, vit_heads=2
        )
    )
    assert not enc.frozen and enc.num_tokens == 16
    out = enc(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert enc.patch_embed.weight.grad is not None


def test_unknown_or_misfit_encoder_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown x_encoder") as caught:
        build_x_encoder(XEncoderConfig(name="resnet"))
    assert caught.value.field == "model.config.x_encoder.name"
    with pytest.raises(ConfigError, match="divisible by 32"):
        build_x_encoder(XEncoderConfig(image_size=100))
    with pytest.raises(ConfigError, match="hf_model"):
        build_x_encoder(XEncoderConfig(name="hf"))
