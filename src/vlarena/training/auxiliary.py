"""Runs a model's auxiliary stage (VL-JEPA's Y-decoder) after the main loop, with the same
optimiser groups and schedule as the loop."""

from __future__ import annotations

import math
import time

import torch

from vlarena.events import OnEvent, ProgressEvent, emit_log, ignore
from vlarena.models.base import AuxiliaryStage
from vlarena.nn.flops import count_flops
from vlarena.training.loop import NonFiniteLoss
from vlarena.training.optim import lr_factor, make_optimizer, set_lr

PROGRESS_EVERY = 50  # steps between progress events (and checks of the loss)


def train_auxiliary(
    stage: AuxiliaryStage, seed: int, on_event: OnEvent = ignore
) -> dict[str, float]:
    """Trains `stage.module` for `stage.steps` steps; returns its final loss, seconds and the
    FLOPs of one sample's forward and backward pass as `<name>_loss`, `<name>_seconds` and
    `<name>_flops_per_sample`."""
    module = stage.module
    module.requires_grad_(True).train()
    opt = make_optimizer(module, stage.learning_rate, stage.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    started, loss = time.perf_counter(), torch.tensor(float("nan"))
    flops_per_sample = 0.0
    samples = stage.steps * stage.batch_size
    for step in range(stage.steps):
        set_lr(opt, lr_factor(step, stage.steps, stage.warmup_steps, stage.min_lr_ratio))

        def forward_backward() -> torch.Tensor:
            out = stage.loss(gen)
            opt.zero_grad(set_to_none=True)
            out.backward()
            return out.detach()

        if step == 0:
            loss, flops = count_flops(forward_backward)
            flops_per_sample = flops / stage.batch_size
        else:
            loss = forward_backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), stage.grad_clip)
        opt.step()
        if (step + 1) % PROGRESS_EVERY == 0 or step + 1 == stage.steps:
            if not math.isfinite(float(loss)):
                raise NonFiniteLoss(
                    f"{stage.name}: the loss became {float(loss)} by step {step + 1} "
                    f"({(step + 1) * stage.batch_size} samples seen); another attempt would "
                    "diverge the same way"
                )
            elapsed = time.perf_counter() - started
            on_event(
                ProgressEvent(
                    "train-decoder",
                    (step + 1) * stage.batch_size,
                    samples,
                    "samples",
                    step=step + 1,
                    total_steps=stage.steps,
                    loss=float(loss),
                    per_second=round((step + 1) * stage.batch_size / max(elapsed, 1e-9), 2),
                )
            )
    module.requires_grad_(False).eval()
    seconds = time.perf_counter() - started
    emit_log(
        on_event,
        f"{stage.name}: {stage.steps} steps on {stage.texts} texts in {seconds:.1f} s, "
        f"loss {float(loss):.3f}",
    )
    return {
        f"{stage.name}_loss": float(loss),
        f"{stage.name}_seconds": seconds,
        f"{stage.name}_flops_per_sample": flops_per_sample,
    }
