import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from bench.pruning import (
    PruneContext,
    classifier_name,
    compressible_layers,
    count_nonzero,
    current_masks,
    prune_to_ratio,
)
from bench.runner import load_pruner
from bench.training import train
from bench.recipes import DIGITS_TRAIN

ALL_PRUNERS = ["wt", "ft", "sipp", "pfp", "random"]


def context(model, digits, start=0, size=32, seed=0):
    images = digits.val.images[start : start + size]
    return PruneContext(calibration=digits.normalize(images), seed=seed, classifier=classifier_name(model))


@pytest.mark.parametrize("pruner", ALL_PRUNERS)
@pytest.mark.parametrize("target", [0.5, 0.85])
def test_hits_target_ratio_on_the_small_cnn(pruner, target, digits, digits_cnn):
    parent_nonzero = count_nonzero(digits_cnn)
    outcome = prune_to_ratio(digits_cnn, load_pruner(pruner), target, parent_nonzero, context(digits_cnn, digits))
    measured = 1 - count_nonzero(digits_cnn) / parent_nonzero
    assert outcome.prune_ratio == pytest.approx(measured)
    assert abs(measured - target) < 0.01


@pytest.mark.parametrize("pruner", ALL_PRUNERS)
def test_hits_target_ratio_on_resnet20(pruner, digits, resnet20):
    parent_nonzero = count_nonzero(resnet20)
    ctx = context(resnet20, digits, size=8)
    prune_to_ratio(resnet20, load_pruner(pruner), 0.6, parent_nonzero, ctx)
    assert abs(1 - count_nonzero(resnet20) / parent_nonzero - 0.6) < 0.01


def test_cascade_keeps_earlier_zeros_and_reaches_the_cumulative_target(digits, digits_cnn):
    parent_nonzero = count_nonzero(digits_cnn)
    ctx = context(digits_cnn, digits)
    prune_to_ratio(digits_cnn, load_pruner("sipp"), 0.5, parent_nonzero, ctx)
    first = current_masks(digits_cnn)
    prune_to_ratio(digits_cnn, load_pruner("sipp"), 0.8, parent_nonzero, ctx)
    second = current_masks(digits_cnn)
    assert all(not (second[name] & ~first[name]).any() for name in first)
    assert abs(1 - count_nonzero(digits_cnn) / parent_nonzero - 0.8) < 0.01


def test_wt_mask_equals_torch_global_unstructured(digits, digits_cnn):
    reference = copy.deepcopy(digits_cnn)
    parent_nonzero = count_nonzero(digits_cnn)
    prune_to_ratio(digits_cnn, load_pruner("wt"), 0.7, parent_nonzero, context(digits_cnn, digits))
    ours = current_masks(digits_cnn)
    kept = sum(int(m.sum()) for m in ours.values())
    layers = compressible_layers(reference)
    total = sum(layer.weight.numel() for layer in layers.values())
    torch_prune.global_unstructured(
        [(layer, "weight") for layer in layers.values()],
        pruning_method=torch_prune.L1Unstructured,
        amount=total - kept,
    )
    for name, layer in layers.items():
        assert torch.equal(layer.weight_mask.bool(), ours[name]), name


def test_ft_removes_whole_filters_and_never_classifier_outputs(digits, digits_cnn):
    parent_nonzero = count_nonzero(digits_cnn)
    head = classifier_name(digits_cnn)
    prune_to_ratio(digits_cnn, load_pruner("ft"), 0.7, parent_nonzero, context(digits_cnn, digits))
    masks = current_masks(digits_cnn)
    for name, mask in masks.items():
        if name == head:
            # classifier rows are all alive: its outputs are never pruned (inputs may be zeroed)
            assert mask.any(dim=1).all()
            continue
        per_filter = mask.flatten(1)
        alive = per_filter.any(1)
        assert (per_filter[alive].all(1)).all(), f"{name}: a kept filter lost single weights"
        assert (~alive).any(), f"{name}: no filter was removed"


@pytest.mark.parametrize("pruner, uses_data", [("sipp", True), ("pfp", True), ("wt", False), ("ft", False)])
def test_masks_depend_on_calibration_data_only_for_data_informed_pruners(pruner, uses_data, digits, digits_cnn):
    parent_nonzero = count_nonzero(digits_cnn)
    masks = []
    for start in (0, 64):
        model = copy.deepcopy(digits_cnn)
        prune_to_ratio(model, load_pruner(pruner), 0.7, parent_nonzero, context(model, digits, start=start, size=64))
        masks.append(current_masks(model))
    differs = any(not torch.equal(masks[0][n], masks[1][n]) for n in masks[0])
    assert differs == uses_data
    assert load_pruner(pruner).uses_data == uses_data


def test_pfp_prunes_channels_and_their_producing_filters(digits, digits_cnn):
    parent_nonzero = count_nonzero(digits_cnn)
    prune_to_ratio(digits_cnn, load_pruner("pfp"), 0.7, parent_nonzero, context(digits_cnn, digits, size=64))
    layers = list(compressible_layers(digits_cnn).values())
    for producer, consumer in zip(layers[:3], layers[1:4]):  # the chain conv1 -> conv2 -> conv3 -> conv4
        dead_inputs = ~consumer.weight.detach().flatten(2).any(2).any(0)
        dead_filters = ~producer.weight.detach().flatten(1).any(1)
        assert dead_inputs.any()
        assert torch.equal(dead_inputs, dead_filters)


def test_masks_stay_fixed_during_retraining(digits, digits_cnn):
    parent_nonzero = count_nonzero(digits_cnn)
    prune_to_ratio(digits_cnn, load_pruner("wt"), 0.8, parent_nonzero, context(digits_cnn, digits))
    masks = current_masks(digits_cnn)
    before = {n: l.weight.detach().clone() for n, l in compressible_layers(digits_cnn).items()}
    train(digits_cnn, digits, DIGITS_TRAIN.model_copy(update={"epochs": 1}), seed=1, masks=masks, progress=False)
    after = current_masks(digits_cnn)
    changed = False
    for name, mask in masks.items():
        assert not (after[name] & ~mask).any(), f"{name}: a pruned weight regrew"
        changed |= not torch.equal(before[name], compressible_layers(digits_cnn)[name].weight)
    assert changed, "retraining did not update the surviving weights"


def test_target_outside_range_is_rejected(digits, digits_cnn):
    with pytest.raises(ValueError, match="target prune ratio"):
        prune_to_ratio(digits_cnn, load_pruner("wt"), 1.0, count_nonzero(digits_cnn), context(digits_cnn, digits))


def test_classifier_is_found_through_get_classifier(resnet20):
    assert classifier_name(resnet20) == "fc"
    assert isinstance(compressible_layers(resnet20)["fc"], nn.Linear)
