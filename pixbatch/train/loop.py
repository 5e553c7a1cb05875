"""The one training loop: seed and threads, AMP, Adam with a one-cycle schedule, gradient clipping, a
resumable state written atomically every ``save_every`` steps, validation, and the progress bar.

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
    save_every: int = 1000
    resume: bool = False


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


class TrainLoop:
    """Runs ``steps`` optimisation steps of ``net``; ``state_path`` holds the resumable state."""

    def __init__(self, net: nn.Module, opts: LoopOptions, device: torch.device, state_path: Path,
                 rng: random.Random, *, progress: bool = True) -> None:
        from pixbatch.runtime.device import training_amp_dtype

        self.net, self.opts, self.device, self.state_path, self.rng = net, opts, device, state_path, rng
        self.progress = progress
        self.amp = training_amp_dtype(opts.amp, device)
        self.opt = torch.optim.Adam(net.parameters(), lr=opts.lr, betas=opts.betas)
        self.sched = one_cycle(self.opt, opts.lr, opts.steps)
        self.start_step, self.seconds = 0, 0.0
        self.extra: dict = {}  # trainer state that must survive a resume
        self.t0 = time.perf_counter()
        if opts.resume and state_path.is_file():
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            net.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            rng.setstate(state["python_rng"])
            self.start_step, self.seconds = int(state["step"]), float(state["seconds"])
            self.extra = state.get("extra", {})

    @property
    def elapsed(self) -> float:
        """Training seconds so far, resumed runs included."""
        return self.seconds + time.perf_counter() - self.t0

    def save_state(self, step: int) -> None:
        buf = io.BytesIO()
        torch.save({"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(), "torch_rng": torch.get_rng_state(),
                    "python_rng": self.rng.getstate(), "step": step, "seconds": self.elapsed,
                    "extra": self.extra}, buf)
        write_bytes(buf.getbuffer(), self.state_path, overwrite=True)

    def run(self, batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
            loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            validate: Callable[[int], str] | None = None,
            before_step: Callable[[int], None] | None = None,
            status: Callable[[], str] | None = None) -> None:
        """``batch(step)`` gives (input, target) on the device; ``validate(step)`` measures and returns a
        short text for the progress line (the net is in eval mode and gradients are off meanwhile);
        ``status()`` adds to the progress line every 10 steps (e.g. each term of the loss)."""
        from tqdm import tqdm

        opts, net = self.opts, self.net
        shown = ""
        bar = tqdm(range(self.start_step + 1, opts.steps + 1), initial=self.start_step, total=opts.steps,
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True, unit="step")
        for step in bar:
            if before_step is not None:
                before_step(step)
            x, y = batch(step)
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                out = net(x)
            loss = loss_fn(out.float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), opts.clip)
            self.opt.step()
            self.sched.step()
            if validate is not None and (step % opts.val_every == 0 or step == opts.steps):
                net.eval()
                with torch.no_grad():
                    shown = validate(step)
                net.train()
                bar.set_postfix_str(f"loss {loss.item():.4f} {shown}")
                if not self.progress:
                    print(f"step {step}/{opts.steps} loss {loss.item():.4f} {shown} {self.elapsed:.0f}s",
                          file=sys.stderr, flush=True)
            elif step % 10 == 0:
                extra = f" {status()}" if status is not None else ""
                bar.set_postfix_str(f"loss {loss.item():.4f}{extra} {shown}", refresh=False)
            if step % opts.save_every == 0 and step < opts.steps:
                self.save_state(step)
        bar.close()

    def recipe(self, cfg, **results) -> dict:
        """What a checkpoint records of its training: the config (paths as text; not where it was written
        or whether it resumed), the command, training time, device and AMP, then ``results``."""
        def plain(v):
            return str(v) if isinstance(v, Path) else [plain(x) for x in v] if isinstance(v, list) else v

        recipe = {k: plain(v) for k, v in asdict(cfg).items() if k not in ("out", "resume", "command")}
        recipe.update(command=cfg.command, seconds=round(self.elapsed), device=str(self.device),
                      amp=str(self.amp).removeprefix("torch.") if self.amp else "off", **results)
        return recipe

    def finish(self) -> None:
        """The final checkpoint is written: the resumable state is no longer needed."""
        self.state_path.unlink(missing_ok=True)
