"""The real-world degradation chain: each stage measured back against the parameters it was given."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from pixbatch.train.degradations import (
    REAL,
    REAL_LIGHT,
    Sampler,
    add_gaussian_noise,
    add_poisson_noise,
    degrade_real,
    filter2d,
    gaussian_kernel,
    jpeg,
    sinc_kernel,
)


def flat(value: float, size: int = 256) -> torch.Tensor:
    return torch.full((3, size, size), value)


@pytest.mark.parametrize("sigma", [2.0, 10.0, 25.0])
def test_gaussian_noise_has_the_sigma_it_was_given(sigma):
    noise = add_gaussian_noise(flat(0.5), sigma, False, torch.Generator().manual_seed(0)) - 0.5
    assert noise.std().item() * 255 == pytest.approx(sigma, rel=0.1)
    assert abs(noise.mean().item()) * 255 < 0.1 * sigma
    corr = torch.corrcoef(noise.reshape(3, -1))[0, 1].item()
    assert abs(corr) < 0.05  # colour noise: independent channels


def test_grey_noise_is_the_same_in_every_channel():
    gen = torch.Generator().manual_seed(0)
    for noisy in (add_gaussian_noise(flat(0.5), 10, True, gen), add_poisson_noise(flat(0.5), 10, True, gen)):
        assert torch.equal(noisy[0], noisy[1]) and torch.equal(noisy[1], noisy[2])
        assert (noisy - 0.5).std().item() > 0.01


@pytest.mark.parametrize("level", [0.25, 1.0])
def test_poisson_noise_grows_with_the_square_root_of_intensity(level):
    sigma_white = 20.0
    noise = add_poisson_noise(flat(level), sigma_white, False, torch.Generator().manual_seed(1)) - level
    assert noise.std().item() * 255 == pytest.approx(sigma_white * math.sqrt(level), rel=0.1)
    assert abs(noise.mean().item()) * 255 < 0.5  # unbiased


def moments(k: torch.Tensor) -> torch.Tensor:
    """The covariance matrix of a kernel seen as a distribution over (x, y)."""
    n = k.shape[0]
    ax = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    k = k.double()
    return torch.tensor([[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]])


def test_gaussian_kernels_have_the_covariance_they_were_given():
    iso = gaussian_kernel(21, 2.0, 2.0)
    assert iso.sum().item() == pytest.approx(1, abs=1e-6)
    assert torch.allclose(moments(iso), torch.diag(torch.tensor([4.0, 4.0], dtype=torch.float64)), rtol=0.1, atol=0.05)
    theta = 0.6
    cov = moments(gaussian_kernel(41, 3.0, 1.0, theta))
    r = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    expected = r @ torch.diag(torch.tensor([9.0, 1.0], dtype=torch.float64)) @ r.T
    assert torch.allclose(cov, expected, rtol=0.1, atol=0.1)


def test_generalised_and_plateau_kernels_keep_their_shapes():
    g = gaussian_kernel(21, 2.0, 2.0)
    assert torch.allclose(gaussian_kernel(21, 2.0, 2.0, shape="generalised", beta=2.0), g, atol=1e-7)
    heavy = gaussian_kernel(21, 2.0, 2.0, shape="generalised", beta=0.5)  # β < 2: heavier tails
    assert heavy[10, 0] > g[10, 0] * 10
    plateau = gaussian_kernel(21, 2.0, 2.0, shape="plateau", beta=2.0)
    assert plateau[10, 11] / plateau[10, 10] > g[10, 11] / g[10, 10]  # flatter top
    assert plateau.sum().item() == pytest.approx(1, abs=1e-6)


def test_sinc_kernel_passes_below_its_cutoff_and_stops_above():
    cutoff = math.pi / 2
    response = torch.fft.fftshift(torch.fft.fft2(sinc_kernel(21, cutoff), s=(128, 128))).abs()
    ax = torch.fft.fftshift(torch.fft.fftfreq(128)) * 2 * math.pi
    fy, fx = torch.meshgrid(ax, ax, indexing="ij")
    radius = torch.sqrt(fx ** 2 + fy ** 2)
    assert response[64, 64].item() == pytest.approx(1, abs=1e-5)
    assert response[radius < 0.6 * cutoff].min() > 0.85
    assert response[(radius > 1.4 * cutoff) & (radius < math.pi)].max() < 0.15


def test_filter2d_is_a_correlation_with_mirrored_borders():
    img = torch.rand(3, 40, 50)
    k = gaussian_kernel(9, 2.0, 1.0, 0.4)
    direct = F.conv2d(F.pad(img[:, None], (4,) * 4, mode="reflect"), k[None, None])[:, 0]
    assert torch.allclose(filter2d(img, k), direct, atol=1e-5)


def test_jpeg_loses_more_at_lower_quality_and_makes_blocks():
    g = torch.Generator().manual_seed(0)
    img = filter2d(torch.rand(3, 128, 128, generator=g), gaussian_kernel(7, 1.5, 1.5))
    errors = {q: (jpeg(img, q) - img).abs().mean().item() for q in (10, 50, 95)}
    assert errors[10] > errors[50] > errors[95]
    out = jpeg(img, 10)
    assert torch.equal(out, out.mul(255).round().div(255))  # 8-bit levels
    step = (out[:, :, 1:] - out[:, :, :-1]).abs().mean(dim=(0, 1))  # column differences
    at_edges = step[7::8].mean()
    inside = torch.cat([step[i::8] for i in range(7)]).mean()
    assert at_edges > 1.3 * inside  # 8x8 block edges


@pytest.mark.parametrize("scale", [2, 4])
def test_the_chain_gives_an_8_bit_lr_of_the_right_size_from_a_seed(scale):
    hr = torch.rand(3, 64 * scale // 2, 48 * scale // 2, generator=torch.Generator().manual_seed(0))
    a = degrade_real(hr, scale, Sampler(REAL, 5))
    assert a.shape == (3, 32, 24)
    assert a.min() >= 0 and a.max() <= 1 and torch.equal(a, a.mul(255).round().div(255))
    assert torch.equal(a, degrade_real(hr, scale, Sampler(REAL, 5)))
    assert not torch.equal(a, degrade_real(hr, scale, Sampler(REAL, 6)))


def test_sampler_draws_its_choices_at_the_stated_rates():
    s = Sampler(REAL, 0)
    factors = [s.factor(REAL.first) for _ in range(4000)]
    assert sum(f == 1.0 for f in factors) / 4000 == pytest.approx(0.1, abs=0.02)
    assert sum(f > 1.0 for f in factors) / 4000 == pytest.approx(0.2, abs=0.025)
    assert min(factors) >= 0.15 and max(factors) <= 1.5
    sizes = {s.size() for _ in range(500)}
    assert sizes == set(range(7, 22, 2))


def test_light_chain_leaves_less_noise_than_the_real_one():
    def residual_noise(spec) -> float:
        out = [degrade_real(flat(0.5, 128), 4, Sampler(spec, seed)) for seed in range(12)]
        return sum(o.std().item() for o in out) / len(out)

    light, strong = residual_noise(REAL_LIGHT), residual_noise(REAL)
    assert light * 255 < 3 and strong > 2 * light
