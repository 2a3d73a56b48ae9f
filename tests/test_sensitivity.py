"""The batched SiPP/PFP sensitivities equal a direct one-image, one-weight-at-a-time evaluation
of the definitions."""

import torch
from torch import nn

from bench.pruning.sensitivity import layer_patches, layer_sensitivities, pfp_layer_scores, sipp_layer_scores


def relative_contributions(layer: nn.Conv2d, image: torch.Tensor) -> torch.Tensor:
    """g[i, j, p] for one image, computed straight from the definition."""
    patches = layer_patches(layer, image[None])  # (1 or 2, J, P), sign-split if needed
    w = layer.weight.detach().flatten(1)
    out = []
    for a in patches:
        z_pos = w.clamp_min(0) @ a
        z_neg = w.clamp_max(0) @ a
        g = torch.zeros(w.shape[0], w.shape[1], a.shape[1])
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                z = z_pos[i] if w[i, j] > 0 else z_neg[i]
                safe = z.abs() > torch.finfo(torch.float32).eps
                g[i, j] = torch.where(safe, w[i, j].abs() * a[j] / z.abs().clamp_min(1e-30), torch.zeros(()))
        out.append(g)
    return torch.stack(out)  # (halves, I, J, P)


def test_batched_scores_match_the_definition():
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 4, kernel_size=3, padding=1, stride=2)
    images = torch.randn(5, 3, 6, 6)  # negative entries: exercises the a+/a- split
    g = torch.stack([relative_contributions(layer, x) for x in images])  # (N, halves, I, J, P)
    g = g.flatten(0, 1)
    expected_sipp = g.mean(3).amax(0).view_as(layer.weight)
    expected_pfp = g.amax(dim=(0, 1, 3)).view(3, 9).amax(1)

    patches = layer_patches(layer, images)
    assert torch.allclose(sipp_layer_scores(layer.weight.detach(), patches), expected_sipp, atol=1e-6)
    assert torch.allclose(pfp_layer_scores(layer.weight.detach(), patches), expected_pfp, atol=1e-6)


def test_hooked_batches_equal_one_big_batch():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    layers = {"0": model[0], "3": model[3]}
    images = torch.randn(12, 3, 6, 6)
    for reducer in (sipp_layer_scores, pfp_layer_scores):
        whole = layer_sensitivities(model, layers, images, reducer, batch_size=12)
        batched = layer_sensitivities(model, layers, images, reducer, batch_size=5)
        for name in layers:
            assert torch.allclose(whole[name], batched[name], atol=1e-6)
