"""The one training loop: seed and threads, AMP, Adam with a one-cycle schedule, gradient clipping, an
exponential moving average of the weights (``ema``), a resumable state written atomically every
``save_every`` steps or ``save_minutes`` minutes, validation with its curve, and the progress bar.

A trainer says only what a step samples and what validation measures; ``train sr`` and ``train seg``
both run here, so both resume exactly (model, optimiser, schedule, random states, step, time, and
whatever the trainer keeps across validations, such as the best weights so far)."""

from __future__ import annotations

import io
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pixbatch.io.atomic import write_bytes


@dataclass
class LoopOptions:
    steps: int
    lr: float  # peak learning rate of the one-cycle schedule
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float = 1.0  # gradient norm
    amp: bool | None = None  # None: bf16 where it is fast (a GPU, or a CPU with native bf16)
    val_every: int = 250
    save_every: int | None = 1000  # None: by minutes only
    save_minutes: float | None = None  # also write the state when this many minutes passed since the last
    ema: float = 0.0  # decay of the weights' moving average (0: none); validation and saving then use it
    resume: bool = False


LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def seed_everything(seed: int, threads: int = 0) -> random.Random:
    """Seed torch (before the model is built, so its initialisation is reproducible) and return the
    Python generator the trainer samples with; ``threads`` > 0 sets torch's CPU threads."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return random.Random(seed)


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """The one-cycle schedule over ``steps`` (any count from 1): warm-up for about a tenth of them, at
    least two steps where there are three or more. OneCycleLR's warm-up phase ends at step
    ``pct_start * steps - 1``; at exactly 0 (10 steps at 10 %) it divides by zero, so the share is
    chosen in whole steps."""
    warm = max(2, round(0.1 * steps)) if steps >= 3 else 0.1 * steps  # below 3 steps: no warm-up to speak of
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=warm / steps)


def ema_update(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], int], None]:
    """The moving average's step for ``AveragedModel``: ``decay``, but at most (1 + n) / (10 + n) after
    n updates, so that a short run (or the first thousand steps of a long one) is not dominated by the
    initial weights."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n) -> None:
        n = int(n)
        d = min(decay, (1 + n) / (10 + n))
        for a, c in zip(averaged, current):
            a.lerp_(c, 1 - d)
    return update


class TrainLoop:
    """Runs ``steps`` optimisation steps of ``net``; ``state_path`` holds the resumable state, and
    ``curve_path`` (when given) the validation curve as CSV, rewritten at every validation."""

    def __init__(self, net: nn.Module, opts: LoopOptions, device: torch.device, state_path: Path,
                 rng: random.Random, *, progress: bool = True, curve_path: Path | None = None) -> None:
        from torch.optim.swa_utils import AveragedModel

        from pixbatch.runtime.device import training_amp_dtype

        self.net, self.opts, self.device, self.state_path, self.rng = net, opts, device, state_path, rng
        self.progress, self.curve_path = progress, curve_path
        self.amp = training_amp_dtype(opts.amp, device)
        self.opt = torch.optim.Adam(net.parameters(), lr=opts.lr, betas=opts.betas)
        self.sched = one_cycle(self.opt, opts.lr, opts.steps)
        self.ema = (AveragedModel(net, multi_avg_fn=ema_update(opts.ema), use_buffers=True).eval()
                    if opts.ema else None)
        self.start_step, self.seconds = 0, 0.0
        self.extra: dict = {"curve": []}  # trainer state that must survive a resume
        self.t0 = time.perf_counter()
        if opts.resume and state_path.is_file():
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            net.load_state_dict(state["model"])
            if self.ema is not None and "ema" in state:
                self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            rng.setstate(state["python_rng"])
            self.start_step, self.seconds = int(state["step"]), float(state["seconds"])
            self.extra = {"curve": [], **state.get("extra", {})}

    @property
    def eval_net(self) -> nn.Module:
        """The weights to validate and save: the moving average when there is one, else the net."""
        return self.ema.module if self.ema is not None else self.net

    @property
    def curve(self) -> list[dict]:
        """One row per validation so far (resumed runs included): step, seconds, loss and the metrics."""
        return self.extra["curve"]

    @property
    def elapsed(self) -> float:
        """Training seconds so far, resumed runs included."""
        return self.seconds + time.perf_counter() - self.t0

    def save_state(self, step: int) -> None:
        buf = io.BytesIO()
        torch.save({"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(), "torch_rng": torch.get_rng_state(),
                    "python_rng": self.rng.getstate(), "step": step, "seconds": self.elapsed,
                    "extra": self.extra, **({"ema": self.ema.state_dict()} if self.ema is not None else {})}, buf)
        write_bytes(buf.getbuffer(), self.state_path, overwrite=True)

    def choose_layout(self, x: torch.Tensor) -> torch.memory_format:
        """Channels-last weights and inputs under mixed precision, else NCHW: on a CPU with AMX, one
        training step of RLFN (16 crops of 48 px) took 0.11 s in bf16 channels-last, 3.4 s in bf16 NCHW
        and 8.8 s in fp32 channels-last (4.2 s NCHW). A rule, not a timing, so that a seed trains the
        same model every time; AMP itself is on only where the hardware computes in bf16 or fp16."""
        if "layout" not in self.extra:
            self.extra["layout"] = "channels_last" if self.amp is not None and x.dim() == 4 else "contiguous"
        layout = LAYOUTS[self.extra["layout"]]
        self.net.to(memory_format=layout)
        if self.ema is not None:
            self.ema.to(memory_format=layout)
        return layout

    def _record(self, step: int, loss: float, metrics: dict[str, float]) -> None:
        self.curve.append({"step": step, "seconds": round(self.elapsed, 1), "loss": round(loss, 6),
                           **{k: round(float(v), 4) for k, v in metrics.items()}})
        if self.curve_path is not None:
            columns = list(dict.fromkeys(k for row in self.curve for k in row))
            lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in self.curve]
            write_bytes(("\n".join(lines) + "\n").encode(), self.curve_path, overwrite=True)

    def run(self, batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
            loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            validate: Callable[[int], tuple[str, dict[str, float]]] | None = None,
            before_step: Callable[[int], None] | None = None,
            status: Callable[[], str] | None = None) -> None:
        """``batch(step)`` gives (input, target) on the device; ``validate(step)`` measures ``eval_net``
        and returns a short text for the progress line and the metrics for the curve (the net is in eval
        mode and gradients are off meanwhile; the line is also printed); ``status()`` adds to the progress
        line every 10 steps (e.g. each term of the loss)."""
        from tqdm import tqdm

        opts, net = self.opts, self.net
        shown, layout = "", None
        last_save = time.perf_counter()
        bar = tqdm(range(self.start_step + 1, opts.steps + 1), initial=self.start_step, total=opts.steps,
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True, unit="step")
        for step in bar:
            if before_step is not None:
                before_step(step)
            x, y = batch(step)
            if layout is None:
                layout = self.choose_layout(x)
            x = x.contiguous(memory_format=layout)
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                out = net(x)
            loss = loss_fn(out.float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), opts.clip)
            self.opt.step()
            self.sched.step()
            if self.ema is not None:
                self.ema.update_parameters(net)
            if validate is not None and (step % opts.val_every == 0 or step == opts.steps):
                net.eval()
                with torch.no_grad():
                    shown, metrics = validate(step)
                net.train()
                self._record(step, loss.item(), metrics)
                bar.set_postfix_str(f"loss {loss.item():.4f} {shown}")
                line = f"step {step}/{opts.steps} loss {loss.item():.4f} {shown} {self.elapsed:.0f}s"
                if self.progress:
                    tqdm.write(line, file=sys.stderr)
                else:
                    print(line, file=sys.stderr, flush=True)
            elif step % 10 == 0:
                extra = f" {status()}" if status is not None else ""
                bar.set_postfix_str(f"loss {loss.item():.4f}{extra} {shown}", refresh=False)
            due = opts.save_minutes is not None and time.perf_counter() - last_save >= 60 * opts.save_minutes
            if ((opts.save_every and step % opts.save_every == 0) or due) and step < opts.steps:
                self.save_state(step)
                last_save = time.perf_counter()
        bar.close()

    def recipe(self, cfg, **results) -> dict:
        """What a checkpoint records of its training: the config (paths as text; not where it was written
        or whether it resumed), the command, training time, device and AMP, then ``results``."""
        def plain(v):
            return str(v) if isinstance(v, Path) else [plain(x) for x in v] if isinstance(v, list) else v

        recipe = {k: plain(v) for k, v in asdict(cfg).items() if k not in ("out", "resume", "command")}
        recipe.update(command=cfg.command, seconds=round(self.elapsed), device=str(self.device),
                      layout=self.extra.get("layout"),
                      amp=str(self.amp).removeprefix("torch.") if self.amp else "off", **results)
        return recipe

    def finish(self) -> None:
        """The final checkpoint is written: the resumable state is no longer needed."""
        self.state_path.unlink(missing_ok=True)
