"""The one training loop for every model family: AdamW groups, warmup + cosine, clipping,
checkpoint/resume, progress events, evaluation points, DDP."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from vlarena.errors import DeterministicFailure, StopRequested
from vlarena.events import ArtifactEvent, MetricEvent, OnEvent, ProgressEvent, emit_log, ignore
from vlarena.files import atomic_path
from vlarena.models.base import VLModel
from vlarena.nn.flops import count_flops
from vlarena.training.distributed import DistContext
from vlarena.training.examples import ExampleSource, gather_visual
from vlarena.training.optim import lr_factor, make_optimizer, set_lr

__all__ = ["BestState", "NonFiniteLoss", "StopRequested", "TrainConfig", "TrainResult", "Trainer"]

# Keys every checkpoint holds; one without them is torn or not a checkpoint.
CHECKPOINT_KEYS = ("step", "model", "optimizer", "rng", "curve", "train_seconds", "last_loss")


class NonFiniteLoss(DeterministicFailure):
    """The loss became NaN or infinite: the run diverged, and another attempt would too."""


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint before the one at `path` is kept, as a fallback for a torn one."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


@dataclass
class TrainConfig:
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    budget_samples: int | None = None
    budget_steps: int | None = None
    vqa_fraction: float = 0.25
    eval_every_samples: int | None = None
    checkpoint_every_steps: int = 100
    log_every_steps: int = 10

    def __post_init__(self) -> None:
        if (self.budget_samples is None) == (self.budget_steps is None):
            raise ValueError("give exactly one budget: samples or steps")
        budget = self.budget_samples if self.budget_samples is not None else self.budget_steps
        if budget is None or budget <= 0 or self.batch_size <= 0:
            raise ValueError("budget and batch size must be positive")

    @property
    def total_samples(self) -> int:
        if self.budget_samples is not None:
            return self.budget_samples
        assert self.budget_steps is not None  # __post_init__ holds one of the two
        return self.budget_steps * self.batch_size

    @property
    def total_steps(self) -> int:
        return math.ceil(self.total_samples / self.batch_size)

    def batch_size_at(self, step: int) -> int:
        """The last step may be short, so that exactly `total_samples` are seen."""
        return min(self.batch_size, self.total_samples - step * self.batch_size)


@dataclass
class BestState:
    """The model's trainable state at the evaluation point where the selection metric was
    highest so far (the earliest such point on a tie), kept on the CPU."""

    samples_seen: int
    step: int
    metric: str
    value: float
    state: dict[str, torch.Tensor]

    def to_checkpoint(self) -> dict[str, Any]:
        # Not dataclasses.asdict, which would deep-copy every tensor of the state.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class TrainResult:
    steps: int
    samples_seen: int
    final_loss: float
    samples_per_second: float
    train_seconds: float
    curve: list[dict[str, Any]] = field(default_factory=list)
    # FLOPs of one sample's forward and backward pass (counted on the first step run here).
    flops_per_sample: float | None = None
    # The best-on-validation state; None without evaluation points or a selection metric.
    best: BestState | None = None


def _save_checkpoint(obj: Any, path: Path) -> None:
    """Writes a checkpoint atomically (fsynced), keeping the one it replaces beside it."""
    with atomic_path(path, keep_previous=previous_checkpoint(path)) as tmp:
        torch.save(obj, tmp)


class Trainer:
    """Trains `model` on the examples of `source` whose visual inputs are `visual` (N, ...).

    `on_event` receives progress, metrics and checkpoint events; `should_stop` is polled
    between steps (True: checkpoint and raise StopRequested); `evaluate` computes the metrics
    of an evaluation point, and `select` names the one of them (higher is better) whose best
    point's state the trainer keeps (`TrainResult.best`). With `checkpoint`, training saves
    there, the best state included, and resumes from it; the checkpoint before it is kept
    beside it (`previous_checkpoint`), so a torn or unreadable latest one falls back to that.
    A loss that becomes NaN or infinite raises NonFiniteLoss.
    """

    def __init__(
        self,
        model: VLModel,
        visual: torch.Tensor,
        source: ExampleSource,
        cfg: TrainConfig,
        *,
        checkpoint: Path | None = None,
        on_event: OnEvent | None = None,
        should_stop: Callable[[], bool] | None = None,
        evaluate: Callable[[VLModel], dict[str, float]] | None = None,
        select: Callable[[Mapping[str, float]], str | None] | None = None,
        dist: DistContext | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.model, self.visual, self.source, self.cfg = model, visual, source, cfg
        self.checkpoint_path = checkpoint
        self.on_event = on_event or ignore
        self.should_stop = should_stop or (lambda: False)
        self.evaluate = evaluate
        self.select = select
        self.dist = dist or DistContext()
        self.device = device or torch.device("cpu")
        self.model.to(self.device)
        self.optimizer = make_optimizer(
            model, cfg.learning_rate, cfg.weight_decay, model.lr_multipliers()
        )
        self.step = 0
        self.curve: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.last_loss = float("nan")
        self.flops_per_sample: float | None = None
        self.best: BestState | None = None
        self._ddp = (
            DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.dist.enabled
            else None
        )

    # --- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None or not self.dist.is_main:
            return
        _save_checkpoint(
            {
                "step": self.step,
                "samples_seen": self.samples_seen,
                "model": self.model.trainable_state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "curve": self.curve,
                "train_seconds": self.train_seconds,
                "last_loss": self.last_loss,
                "best": None if self.best is None else self.best.to_checkpoint(),
                "train_config": dataclasses.asdict(self.cfg),
            },
            self.checkpoint_path,
        )
        self.on_event(
            ArtifactEvent("checkpoint", str(self.checkpoint_path), self.step, self.samples_seen)
        )

    def _read_checkpoint(self, path: Path) -> dict[str, Any]:
        blob = torch.load(path, map_location=self.device, weights_only=True)
        if not isinstance(blob, dict) or any(key not in blob for key in CHECKPOINT_KEYS):
            raise ValueError("not a complete checkpoint")
        return blob

    def _restore(self, blob: dict[str, Any]) -> None:
        self.model.load_state_dict(blob["model"], strict=False)
        self.optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["rng"])
        if blob.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["cuda_rng"])
        self.step = blob["step"]
        self.curve = blob["curve"]
        self.train_seconds = blob["train_seconds"]
        self.last_loss = blob["last_loss"]
        if blob.get("best") is not None:  # checkpoints written before best states had none
            best = blob["best"]
            self.best = BestState(
                **{**best, "state": {k: v.cpu() for k, v in best["state"].items()}}
            )

    def try_resume(self) -> bool:
        """Resumes from the latest checkpoint, or from the one before it when the latest cannot
        be read (a write torn by a crash, a damaged disk); False when there is none to resume
        from (training starts over, with a warning, when none there can be read)."""
        if self.checkpoint_path is None:
            return False
        latest = self.checkpoint_path
        found = [p for p in (latest, previous_checkpoint(latest)) if p.exists()]
        for path in found:
            try:
                blob = self._read_checkpoint(path)
            except Exception as err:
                emit_log(
                    self.on_event,
                    f"checkpoint {path.name} cannot be read ({type(err).__name__}: {err})",
                    "warning",
                )
                continue
            self._restore(blob)
            fallback = "" if path == latest else f" (the previous one, {path.name})"
            emit_log(
                self.on_event,
                f"resumed from checkpoint at step {self.step} ({self.samples_seen} samples "
                f"seen){fallback}",
                "info" if path == latest else "warning",
            )
            return True
        if found:
            emit_log(
                self.on_event, "no checkpoint could be read: training from the start", "warning"
            )
        return False

    # --- the loop --------------------------------------------------------------------------
    @property
    def samples_seen(self) -> int:
        return min(self.step * self.cfg.batch_size, self.cfg.total_samples)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> float:
        cfg = self.cfg
        size = cfg.batch_size_at(self.step)
        examples = self.source.batch(cfg.seed, self.step, cfg.batch_size, size)
        local = examples[self.dist.rank :: self.dist.world_size]
        visual = gather_visual(self.visual, local).to(self.device, non_blocking=True)
        batch = self.model.make_batch(visual, [e.text for e in local], [e.query for e in local])
        set_lr(
            self.optimizer,
            lr_factor(self.step, cfg.total_steps, cfg.warmup_steps, cfg.min_lr_ratio),
        )

        def forward_backward() -> torch.Tensor:
            with self._autocast():
                loss, _ = self._ddp(batch) if self._ddp else self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            return loss

        if self.flops_per_sample is None:  # counted once: every full step costs the same
            loss, flops = count_flops(forward_backward)
            self.flops_per_sample = flops / max(len(local), 1)
        else:
            loss = forward_backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def _evaluation_due(self, before: int) -> bool:
        every = self.cfg.eval_every_samples
        if not every or self.evaluate is None:
            return False
        return (
            self.samples_seen // every > before // every
            or self.samples_seen == self.cfg.total_samples
        )

    def _run_evaluation(self) -> None:
        assert self.evaluate is not None  # only called when an evaluation is due
        self.model.eval()
        metrics = self.evaluate(self.model)
        self.model.train()
        point = {
            "samplesSeen": self.samples_seen,
            "step": self.step,
            "loss": self.last_loss,
            **metrics,
        }
        self.curve.append(point)
        self._keep_if_best(metrics)
        self.on_event(MetricEvent(self.samples_seen, point))

    def _keep_if_best(self, metrics: Mapping[str, float]) -> None:
        name = self.select(metrics) if self.select else None
        if name is None or not math.isfinite(value := float(metrics[name])):
            return
        if self.best is None or value > self.best.value:
            state = {
                k: v.detach().to("cpu", copy=True)
                for k, v in self.model.trainable_state_dict().items()
            }
            self.best = BestState(self.samples_seen, self.step, name, value, state)

    def fit(self) -> TrainResult:
        cfg = self.cfg
        if not self.try_resume():
            torch.manual_seed(cfg.seed)
        self.model.train()
        ema_rate = None
        while self.step < cfg.total_steps:
            if self.should_stop():
                self.save_checkpoint()
                raise StopRequested(f"stopped at step {self.step}")
            before = self.samples_seen
            started = time.perf_counter()
            self.last_loss = self.train_step()
            elapsed = time.perf_counter() - started
            self.train_seconds += elapsed
            rate = (self.samples_seen - before) / max(elapsed, 1e-9)
            ema_rate = rate if ema_rate is None else 0.9 * ema_rate + 0.1 * rate
            if not math.isfinite(self.last_loss):
                raise NonFiniteLoss(
                    f"the training loss became {self.last_loss} at step {self.step} "
                    f"({self.samples_seen} samples seen): lower the learning rate or check the "
                    "data; another attempt would diverge the same way"
                )
            done = self.step == cfg.total_steps
            if self.dist.is_main and (self.step % cfg.log_every_steps == 0 or done):
                remaining = cfg.total_samples - self.samples_seen
                self.on_event(
                    ProgressEvent(
                        "train",
                        self.samples_seen,
                        cfg.total_samples,
                        "samples",
                        step=self.step,
                        total_steps=cfg.total_steps,
                        loss=self.last_loss,
                        per_second=round(ema_rate, 2),
                        eta_seconds=round(remaining / ema_rate, 1) if ema_rate else None,
                        learning_rate=self.optimizer.param_groups[0]["lr"],
                    )
                )
            if self._evaluation_due(before) and self.dist.is_main:
                self._run_evaluation()
            if self.step % cfg.checkpoint_every_steps == 0 or done:
                self.save_checkpoint()
        self.model.eval()
        return TrainResult(
            steps=self.step,
            samples_seen=self.samples_seen,
            final_loss=self.last_loss,
            samples_per_second=self.samples_seen / max(self.train_seconds, 1e-9),
            train_seconds=self.train_seconds,
            curve=self.curve,
            flops_per_sample=self.flops_per_sample,
            best=self.best,
        )
