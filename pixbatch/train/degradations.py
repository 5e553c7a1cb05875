"""Real-world degradations for training upscalers on photos (``pixbatch train sr --degrade real``).

A second-order chain after the published "practical" recipes (BSRGAN, Real-ESRGAN), written for torch:
two rounds, each with freshly drawn parameters, of blur, resize, noise and JPEG; then the final resize to
the LR size with a sinc filter (ringing and overshoot), before or after the last JPEG (even odds). It runs
on one HR crop at a time (CHW float in [0, 1]), on the fly in the data-loader workers (train/sr_data.py);
the LR comes out on 8-bit levels. Noise σ is in 8-bit levels; a range is drawn uniformly.

======================  =========================================  ======================================
stage                   round 1                                    round 2
======================  =========================================  ======================================
blur (probability)      1.0                                        0.8
  kernel                odd size 7-21; isotropic 0.45, anisotropic 0.25, generalised isotropic 0.12 and
                        anisotropic 0.03 (shape β 0.5-4), plateau isotropic 0.12 and anisotropic 0.03
                        (β 1-2), any angle; a sinc kernel instead with probability 0.1
  σ                     0.2-3                                      0.2-1.5
resize                  up 0.2 (x1-1.5), down 0.7 (x0.15-1),        up 0.3 (x1-1.2), down 0.4 (x0.3-1), same
                        same 0.1; of the HR size                   0.3; of the LR size; area, bilinear or
                                                                   bicubic (even odds) in both rounds
noise                   Gaussian 0.5 (σ 1-30), else Poisson        Gaussian 0.5 (σ 1-25), else Poisson
                        (σ at white 1-45); grey 0.4, else colour   (σ at white 1-40); grey 0.4
JPEG quality            30-95                                      30-95
final sinc              probability 0.8, cutoff π/3-π, size 7-21
======================  =========================================  ======================================

``--degrade real-light`` keeps the blur, resize and sinc and weakens the rest: noise σ 1-5 (Poisson σ at white
1-6) in both rounds, JPEG 70-95. The models of ``--denoise`` (``real_x2``, ``real_x4``) interpolate a model
trained with ``real-light`` (0: keeps grain) and one trained with ``real`` (1: cleans).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

KERNELS = ("iso", "aniso", "gen_iso", "gen_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


@dataclass(frozen=True)
class Round:
    """The parameter ranges of one round of the chain."""

    blur_prob: float
    sigma: tuple[float, float]
    resize_probs: tuple[float, float, float]  # up, down, same
    up: tuple[float, float]
    down: tuple[float, float]
    noise_sigma: tuple[float, float]  # Gaussian, 8-bit levels
    poisson_sigma: tuple[float, float]  # Poisson: σ at white, 8-bit levels
    jpeg: tuple[int, int]
    gaussian_prob: float = 0.5
    grey_prob: float = 0.4


@dataclass(frozen=True)
class RealDegradation:
    first: Round
    second: Round
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    gen_beta: tuple[float, float] = (0.5, 4.0)
    plateau_beta: tuple[float, float] = (1.0, 2.0)
    sinc_prob: float = 0.1  # a sinc kernel instead of a blur kernel, in each round
    final_sinc_prob: float = 0.8
    kernel_sizes: tuple[int, int] = (7, 21)


REAL = RealDegradation(
    first=Round(1.0, (0.2, 3.0), (0.2, 0.7, 0.1), (1.0, 1.5), (0.15, 1.0), (1, 30), (1, 45), (30, 95)),
    second=Round(0.8, (0.2, 1.5), (0.3, 0.4, 0.3), (1.0, 1.2), (0.3, 1.0), (1, 25), (1, 40), (30, 95)),
)
REAL_LIGHT = replace(REAL, first=replace(REAL.first, noise_sigma=(1, 5), poisson_sigma=(1, 6), jpeg=(70, 95)),
                     second=replace(REAL.second, noise_sigma=(1, 5), poisson_sigma=(1, 6), jpeg=(70, 95)))
DEGRADATIONS = {"real": REAL, "real-light": REAL_LIGHT}


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0, shape: str = "gaussian",
                    beta: float = 2.0) -> torch.Tensor:
    """A normalised size x size blur kernel: Gaussian of covariance R diag(σx², σy²) Rᵀ (R: rotation by
    ``theta``), or with q = dᵀΣ⁻¹d, the generalised Gaussian exp(-q^(β/2) / 2) or the plateau 1 / (1 + q^β)."""
    half = (size - 1) / 2
    ax = torch.arange(size, dtype=torch.float64) - half
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y  # coordinates along the kernel's own axes
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    if shape == "gaussian":
        k = torch.exp(-0.5 * q)
    elif shape == "generalised":
        k = torch.exp(-0.5 * q ** (beta / 2))
    elif shape == "plateau":
        k = 1 / (1 + q ** beta)
    else:
        raise ValueError(f"unknown kernel shape {shape!r}")
    return (k / k.sum()).float()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """A normalised circular low-pass (2-D sinc) kernel of angular cutoff ``cutoff`` (π: Nyquist)."""
    half = (size - 1) / 2
    ax = torch.arange(size, dtype=torch.float64) - half
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    r = torch.sqrt(x ** 2 + y ** 2)
    k = torch.where(r > 0, cutoff * torch.special.bessel_j1(cutoff * r) / (2 * math.pi * r.clamp_min(1e-12)),
                    torch.full_like(r, cutoff ** 2 / (4 * math.pi)))
    return (k / k.sum()).float()


def filter2d(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Each channel of ``img`` (CHW) correlated with ``kernel`` (odd size), borders mirrored; through the
    FFT, which is 3-4x faster than a direct convolution for these kernel sizes on one core."""
    pad = kernel.shape[-1] // 2
    mode = "reflect" if pad < min(img.shape[-2:]) else "replicate"
    x = F.pad(img[:, None], (pad,) * 4, mode=mode)[:, 0]
    size = x.shape[-2:]
    spectrum = torch.fft.rfft2(x) * torch.fft.rfft2(kernel.flip(0, 1).to(img.dtype), s=size)
    return torch.fft.irfft2(spectrum, s=size)[:, 2 * pad:, 2 * pad:]


def add_gaussian_noise(img: torch.Tensor, sigma: float, grey: bool, gen: torch.Generator) -> torch.Tensor:
    """Add noise of σ ``sigma`` 8-bit levels, the same in the three channels when ``grey``."""
    shape = (1, *img.shape[1:]) if grey else img.shape
    return img + torch.randn(shape, generator=gen, dtype=img.dtype) * (sigma / 255)


def add_poisson_noise(img: torch.Tensor, sigma_white: float, grey: bool, gen: torch.Generator) -> torch.Tensor:
    """Shot noise: photon counts of a Poisson law whose σ at white is ``sigma_white`` 8-bit levels (σ at
    intensity x is sigma_white * sqrt(x)); on the luma only when ``grey``."""
    peak = (255 / sigma_white) ** 2
    base = img.clamp(0, 1)
    if grey:
        base = (0.299 * base[0] + 0.587 * base[1] + 0.114 * base[2])[None]
    noise = torch.poisson(base * peak, generator=gen) / peak - base
    return img + noise


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """The image after a JPEG round trip at ``quality`` (Pillow's libjpeg, 4:2:0 chroma)."""
    import io

    import numpy as np
    from PIL import Image

    x8 = img.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(x8).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    with Image.open(buf) as im:
        out = np.asarray(im.convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float().div_(255)


def resize(img: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(img.shape[-2:]) == size:
        return img
    extra = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(img[None], size=size, mode=mode, **extra)[0]


class Sampler:
    """Draws the chain's parameters (``random.Random``) and noise (``torch.Generator``) from one seed."""

    def __init__(self, spec: RealDegradation, seed: int) -> None:
        self.spec, self.rng = spec, random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def size(self) -> int:
        lo, hi = self.spec.kernel_sizes
        return self.rng.choice(range(lo, hi + 1, 2))

    def blur_kernel(self, sigma: tuple[float, float]) -> torch.Tensor:
        rng, spec, size = self.rng, self.spec, self.size()
        if rng.random() < spec.sinc_prob:
            return sinc_kernel(size, rng.uniform(math.pi / 3 if size >= 13 else math.pi / 2, math.pi))
        kind = rng.choices(KERNELS, weights=spec.kernel_probs)[0]
        sx = rng.uniform(*sigma)
        sy, theta = (rng.uniform(*sigma), rng.uniform(0, math.pi)) if kind.endswith("aniso") else (sx, 0.0)
        shape, beta = {"gen": ("generalised", rng.uniform(*spec.gen_beta)),
                       "plateau": ("plateau", rng.uniform(*spec.plateau_beta))}.get(kind.split("_")[0], ("gaussian", 2.0))
        return gaussian_kernel(size, sx, sy, theta, shape, beta)

    def factor(self, r: Round) -> float:
        which = self.rng.choices(("up", "down", "same"), weights=r.resize_probs)[0]
        return 1.0 if which == "same" else self.rng.uniform(*(r.up if which == "up" else r.down))

    def noise(self, img: torch.Tensor, r: Round) -> torch.Tensor:
        grey = self.rng.random() < r.grey_prob
        if self.rng.random() < r.gaussian_prob:
            return add_gaussian_noise(img, self.rng.uniform(*r.noise_sigma), grey, self.gen)
        return add_poisson_noise(img, self.rng.uniform(*r.poisson_sigma), grey, self.gen)

    def mode(self) -> str:
        return self.rng.choice(RESIZE_MODES)


def degrade_real(hr: torch.Tensor, scale: int, sampler: Sampler) -> torch.Tensor:
    """The LR image (CHW, 1/scale of ``hr``'s size, on 8-bit levels) of one HR image through the chain."""
    spec, rng = sampler.spec, sampler.rng
    h, w = hr.shape[-2:]
    lr_size = (h // scale, w // scale)
    x = filter2d(hr.float(), sampler.blur_kernel(spec.first.sigma))  # round 1: blur always
    f = sampler.factor(spec.first)
    x = resize(x, (max(8, round(h * f)), max(8, round(w * f))), sampler.mode()).clamp_(0, 1)
    x = jpeg(sampler.noise(x, spec.first), rng.randint(*spec.first.jpeg))
    if rng.random() < spec.second.blur_prob:
        x = filter2d(x, sampler.blur_kernel(spec.second.sigma))
    f = sampler.factor(spec.second)
    x = resize(x, (max(8, round(lr_size[0] * f)), max(8, round(lr_size[1] * f))), sampler.mode()).clamp_(0, 1)
    x = sampler.noise(x, spec.second)
    sinc = sinc_kernel(sampler.size(), rng.uniform(math.pi / 3, math.pi)) if rng.random() < spec.final_sinc_prob else None
    quality, mode = rng.randint(*spec.second.jpeg), sampler.mode()
    if rng.random() < 0.5:  # resize and sinc, then JPEG
        x = resize(x, lr_size, mode)
        x = jpeg(filter2d(x, sinc) if sinc is not None else x, quality)
    else:  # JPEG, then resize and sinc
        x = resize(jpeg(x, quality), lr_size, mode)
        x = filter2d(x, sinc) if sinc is not None else x
    return x.clamp_(0, 1).mul_(255).round_().div_(255)
