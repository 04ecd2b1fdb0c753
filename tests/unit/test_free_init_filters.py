"""FreeInit's parts against plain re-statements of the paper's formulas (numpy's FFT, loops over every bin)."""
import math

import numpy as np
import pytest
import torch

from animatediff.sampling.free_init import coarse_to_fine, diffuse_to_start, low_pass_filter, mix_frequencies
from reference import filter_by_loops, mix_by_numpy


@pytest.mark.parametrize("kind", ["butterworth", "gaussian"])
@pytest.mark.parametrize("d_s,d_t", [(0.25, 0.25), (0.4, 0.1)])
def test_low_pass_filter_is_the_papers_for_every_frequency(kind, d_s, d_t):
    ours = low_pass_filter(16, 8, 6, kind, d_s, d_t)
    expected = filter_by_loops(16, 8, 6, kind, d_s, d_t)
    assert ours.shape == (16, 8, 6) and np.abs(ours.numpy() - expected).max() <= 1e-6
    assert ours[8, 4, 3] == 1.0 and ours.min() < 0.05  # zero frequency kept whole, the highest mostly dropped


def test_frequencies_mix_as_a_3d_transform_per_channel():
    g = torch.Generator().manual_seed(0)
    low_from, high_from = torch.randn(2, 12, 4, 8, 10, generator=g).unbind(0)
    mask = low_pass_filter(12, 8, 10, "butterworth", 0.3, 0.2)
    expected = mix_by_numpy(low_from.double().numpy(), high_from.double().numpy(), mask.double().numpy())
    assert np.abs(mix_frequencies(low_from, high_from, mask).numpy() - expected).max() <= 1e-5
    assert torch.allclose(mix_frequencies(low_from, high_from, torch.ones(12, 8, 10)), low_from, atol=1e-5)
    assert torch.allclose(mix_frequencies(low_from, high_from, torch.zeros(12, 8, 10)), high_from, atol=1e-5)


def test_diffusion_to_the_last_step_is_ddpms_forward_process():
    alphas_cumprod = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64), 0)
    last = alphas_cumprod[-1].item()
    sigma_max = math.sqrt((1 - last) / last)  # ComfyUI's sigma at timestep 999
    clean, noise = torch.randn(2, 3, 4, 5, 5, generator=torch.Generator().manual_seed(1)).unbind(0)
    expected = math.sqrt(last) * clean + math.sqrt(1 - last) * noise
    assert torch.allclose(diffuse_to_start(clean, noise, sigma_max, from_max=True), expected, atol=1e-6)
    # a schedule starting below the largest sigma: the sampler starts from noise · σ, so clean / σ + ε
    assert torch.allclose(diffuse_to_start(clean, noise, 8.0, from_max=False), clean / 8 + noise, atol=1e-6)


def test_coarse_to_fine_rounds_take_the_papers_step_counts_from_the_schedule():
    sigmas = torch.tensor([14.6, 9.0, 6.0, 4.0, 2.5, 1.5, 0.8, 0.4, 0.1, 0.0])  # 9 steps
    assert coarse_to_fine(sigmas, 0, 3).tolist() == sigmas[[0, 3, 6, 9]].tolist()  # int(9 / 3 · 1) = 3 steps
    assert coarse_to_fine(sigmas, 1, 3).tolist() == sigmas[[0, 2, 3, 4, 6, 8, 9]].tolist()  # 6: 1.5 apart, rounded
    assert torch.equal(coarse_to_fine(sigmas, 2, 3), sigmas)
    assert coarse_to_fine(sigmas[:3], 0, 5).tolist() == sigmas[[0, 2]].tolist()  # never fewer than one step
    for steps in range(1, 200):  # the last round always takes the whole schedule (float division would not)
        schedule = torch.linspace(10, 0, steps + 1)
        assert all(torch.equal(coarse_to_fine(schedule, rounds - 1, rounds), schedule) for rounds in range(1, 11))
