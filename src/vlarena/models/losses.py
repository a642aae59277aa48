"""Training losses kept apart from the models: bidirectional InfoNCE with duplicate-aware targets."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


class InfoNCE(nn.Module):
    """Symmetric contrastive loss between predicted and target embeddings, learnable temperature.

    Rows whose targets are the same text are all positives for each other (answers such as
    "a bag" repeat within a batch); each direction spreads its target mass evenly over them.
    Under data parallelism the embeddings of every rank are gathered, so the loss equals that
    of the whole global batch.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
        self.max_log_scale = math.log(max_scale)

    @property
    def scale(self) -> Tensor:
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    def forward(
        self, pred: Tensor, target: Tensor, text_ids: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """`pred`, `target`: (B, D) unnormalised; `text_ids` (B,) equal for identical texts."""
        pred, target = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            pred, target, text_ids = _gather(pred), _gather(target), _gather_ids(text_ids)
        logits = self.scale * pred @ target.T  # (B, B)
        same = (text_ids[:, None] == text_ids[None, :]).to(logits.dtype)
        soft = same / same.sum(1, keepdim=True)
        loss_i2t = -(soft * logits.log_softmax(1)).sum(1).mean()
        loss_t2i = -(soft * logits.T.log_softmax(1)).sum(1).mean()
        return (loss_i2t + loss_t2i) / 2, {"logit_scale": float(self.scale.detach())}


def _gather(x: Tensor) -> Tensor:
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x))


def _gather_ids(ids: Tensor) -> Tensor:
    parts = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, ids)
    return torch.cat(parts)
