"""Pruners and the shared pruning step: measured ratios, the reference's propagation over S, masks."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

import bench.pruning.search
from bench.core.registry import PRUNER_GROUP, builtin_names
from bench.data import ImageSet
from bench.data.recipes import DIGITS_TRAIN
from bench.pipeline.training import train
from bench.pruning import (
    PROPAGATION_PASSES,
    PruneContext,
    calibration_size,
    classifier_name,
    compressible_layers,
    count_nonzero,
    current_masks,
    last_layer_name,
    layer_output_sizes,
    load_pruner,
    parameter_masks,
    propagate_compression,
    prune_to_ratio,
    reference_keep_ratio,
)

# every pruner the project registers (its entry points), as timm's tests follow list_models(): a new
# pruner is tested here without anyone listing it
ALL_PRUNERS = builtin_names(PRUNER_GROUP)


# A coarser size search (within 0.5 %, at most 12 tries) for tests of a property of propagation or
# retraining, not of the search: the ratio still lands within 1 %.
COARSE_SEARCH = {"tolerance": 5e-3, "max_steps": 12}


def context(model, digits, start=0, size=32, seed=0):
    images = digits.val.images[start : start + size]
    return PruneContext(calibration=digits.normalize(images), labels=digits.val.labels[start : start + size],
                        seed=seed, last_layer=last_layer_name(model))


@pytest.mark.parametrize("pruner", ALL_PRUNERS)
@pytest.mark.parametrize("target", [0.5, 0.85])
def test_hits_target_ratio_on_the_small_cnn(pruner, target, digits, digits_cnn):
    parent_nonzero = count_nonzero(digits_cnn)
    outcome = prune_to_ratio(digits_cnn, load_pruner(pruner), target, parent_nonzero, context(digits_cnn, digits))
    measured = 1 - count_nonzero(digits_cnn) / parent_nonzero
    assert outcome.prune_ratio == pytest.approx(measured)
    assert abs(measured - target) < 0.01


@pytest.mark.slow
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


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.02])
def test_wt_plan_equals_torch_global_unstructured(keep, digits, digits_cnn):
    """WT's masks before propagation are torch's global L1 magnitude pruning."""
    ours = load_pruner("wt").plan(digits_cnn, context(digits_cnn, digits))(keep)
    kept = sum(int(m.sum()) for m in ours.values())
    layers = compressible_layers(digits_cnn)
    total = sum(layer.weight.numel() for layer in layers.values())
    torch_prune.global_unstructured(
        [(layer, "weight") for layer in layers.values()],
        pruning_method=torch_prune.L1Unstructured,
        amount=total - kept,
    )
    for name, layer in layers.items():
        assert torch.equal(layer.weight_mask.bool(), ours[name]), name


def test_ft_removes_whole_filters_and_never_the_last_layers_outputs(digits, digits_cnn):
    parent_nonzero = count_nonzero(digits_cnn)
    head = last_layer_name(digits_cnn)
    prune_to_ratio(digits_cnn, load_pruner("ft"), 0.7, parent_nonzero, context(digits_cnn, digits))
    masks = current_masks(digits_cnn)
    for name, mask in masks.items():
        if name == head:
            # classifier rows are all alive: its outputs are never pruned (inputs may be zeroed)
            assert mask.any(dim=1).all()
            continue
        slices = mask.flatten(2)  # (filter, input channel, kernel offset)
        assert torch.equal(slices.all(2), slices.any(2)), f"{name}: a kernel lost single weights"
        alive = slices.any(2).any(1)
        columns = slices.any(2)[alive]
        assert (columns == columns[:1]).all(), f"{name}: kept filters read different input channels"
        assert (~alive).any(), f"{name}: no filter was removed"


@pytest.mark.parametrize("pruner, uses_data", [("sipp", True), ("pfp", True), ("wt", False), ("ft", False)])
def test_scores_depend_on_calibration_data_only_for_data_informed_pruners(pruner, uses_data, digits, digits_cnn):
    """WT's and FT's *scores* (their plans) are data-free; the final masks of every pruner depend on S
    through the propagation step."""
    plans = [load_pruner(pruner).plan(digits_cnn, context(digits_cnn, digits, start=start, size=64))
             for start in (0, 64)]
    first, second = plans[0](0.3), plans[1](0.3)
    differs = any(not torch.equal(first[n], second[n]) for n in first)
    assert differs == uses_data
    assert load_pruner(pruner).uses_data == uses_data


def constant_input_channels(model, images):
    """Per compressible layer, the input channels identical for every image and position."""
    inputs = {}
    handles = [layer.register_forward_hook(lambda _m, args, _o, name=name: inputs.__setitem__(name, args[0]))
               for name, layer in compressible_layers(model).items()]
    with torch.no_grad():
        model.eval()(images)
    for handle in handles:
        handle.remove()
    constant = {}
    for name, x in inputs.items():
        x = x.reshape(-1, x.shape[-1], 1) if x.ndim == 2 else x.flatten(2)
        constant[name] = (x == x[:1]).all(2).all(0)
    return constant


def zero_gradient_parameters(model, images, labels):
    """Parameter name -> entries whose cross-entropy gradient over (images, labels) is exactly zero."""
    model.eval().zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    zero = {name: p.grad == 0 for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return zero


def test_the_default_propagation_is_the_references_single_pass():
    """Zeroing the columns that read a pruned unit's constant output shifts the next pre-activations:
    here fc2's unit 0 (relu(h1 - 0.5) before, relu(h1 - 5.5) = 0 after) becomes constant. The
    reference's single pass leaves fc3's column reading it; only `--propagation fixpoint` removes it."""
    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]))  # unit 0 pruned
        model[0].bias.copy_(torch.tensor([5.0, 0.0]))  # its output: relu(5), constant
        model[2].weight.copy_(torch.tensor([[1.0, 1.0], [0.5, 1.0]]))
        model[2].bias.copy_(torch.tensor([-5.5, 0.0]))
        model[4].weight.fill_(1.0)
    images = torch.rand(16, 4, generator=torch.Generator().manual_seed(0))
    ctx = PruneContext(calibration=images, labels=torch.arange(16) % 3, seed=0, last_layer="4")
    once, fixpoint = copy.deepcopy(model), copy.deepcopy(model)
    propagate_compression(once, ctx, structured=True)
    propagate_compression(fixpoint, ctx, structured=True, max_passes=PROPAGATION_PASSES["fixpoint"])
    assert not once[2].weight[:, 0].any() and not fixpoint[2].weight[:, 0].any()  # read the constant unit
    assert once[2].weight[:, 1].all()
    assert once[4].weight.all(), "one pass removed what only a second pass can see"
    assert not fixpoint[4].weight[:, 0].any() and not fixpoint[2].weight[0].any()
    assert fixpoint[4].weight[:, 1].all()


@pytest.mark.parametrize("propagation", [None, "once", "fixpoint"])
def test_prune_to_ratio_propagates_as_the_protocol_says(propagation, digits, digits_cnn, monkeypatch):
    passes = []
    real = bench.pruning.search.propagate_compression

    def recorded(model, ctx, structured, max_passes=1):
        passes.append(max_passes)
        return real(model, ctx, structured, max_passes)

    monkeypatch.setattr(bench.pruning.search, "propagate_compression", recorded)
    options = {} if propagation is None else {"propagation": propagation}
    outcome = prune_to_ratio(digits_cnn, load_pruner("ft"), 0.7, count_nonzero(digits_cnn),
                             context(digits_cnn, digits, size=48), **options)
    assert abs(outcome.prune_ratio - 0.7) < 0.01
    assert len(passes) >= 2 and set(passes) == {PROPAGATION_PASSES[propagation or "once"]}


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["ft", "pfp"])
@pytest.mark.parametrize("target", [0.5, 0.85])
@pytest.mark.parametrize("network", ["digits_cnn", "trained_resnet20"])
def test_fixpoint_propagation_zeroes_every_column_that_reads_a_constant_channel(pruner, target, network, digits,
                                                                                  request):
    model = request.getfixturevalue(network)
    parent_nonzero = count_nonzero(model)
    ctx = context(model, digits, size=48)
    prune_to_ratio(model, load_pruner(pruner), target, parent_nonzero, ctx, propagation="fixpoint", **COARSE_SEARCH)
    assert abs(1 - count_nonzero(model) / parent_nonzero - target) < 0.01
    layers = compressible_layers(model)
    constant = constant_input_channels(model, ctx.calibration)
    assert any(c.any() for c in constant.values()), "no channel was pruned"
    for name, channels in constant.items():
        assert not layers[name].weight[:, channels].any(), f"{name} still reads a constant channel"


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["wt", "sipp"])
@pytest.mark.parametrize("target", [0.5, 0.9])
@pytest.mark.parametrize("network", ["digits_cnn", "trained_resnet20"])
def test_fixpoint_propagation_zeroes_every_parameter_without_gradient(pruner, target, network, digits, request):
    model = request.getfixturevalue(network)
    parent_nonzero = count_nonzero(model)
    ctx = context(model, digits, size=48)
    prune_to_ratio(model, load_pruner(pruner), target, parent_nonzero, ctx, propagation="fixpoint")
    assert abs(1 - count_nonzero(model) / parent_nonzero - target) < 0.01
    params = dict(model.named_parameters())
    for name, zero in zero_gradient_parameters(model, ctx.calibration, ctx.labels).items():
        assert not params[name][zero].any(), f"{name} keeps entries whose gradient over S is zero"


def test_unstructured_propagation_hands_the_freed_budget_to_weights(digits, digits_cnn):
    def weight_nonzero(model):
        return sum(int(layer.weight.count_nonzero()) for layer in compressible_layers(model).values())

    parent_nonzero = count_nonzero(digits_cnn)
    parent_others = parent_nonzero - weight_nonzero(digits_cnn)  # biases and BN affine
    prune_to_ratio(digits_cnn, load_pruner("wt"), 0.9, parent_nonzero, context(digits_cnn, digits, size=48))
    nonzero = count_nonzero(digits_cnn)
    assert nonzero - weight_nonzero(digits_cnn) < parent_others, "no bias or BN entry was zeroed"
    # the search measures every nonzero after propagation, so what propagation zeroed is spent on weights:
    # the total meets the target within the reference search's stopping rule (brentq, xtol 5e-3 in the keep ratio)
    assert abs(nonzero - round(0.1 * parent_nonzero)) <= 5e-3 * parent_nonzero


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["wt", "ft", "sipp", "pfp"])
@pytest.mark.parametrize("network", ["digits_cnn", "trained_resnet20"])
def test_every_zeroed_parameter_stays_zero_through_retraining(pruner, network, digits, request):
    model = request.getfixturevalue(network)
    parent_nonzero = count_nonzero(model)
    prune_to_ratio(model, load_pruner(pruner), 0.85, parent_nonzero, context(model, digits, size=48), **COARSE_SEARCH)
    masks = parameter_masks(model)
    zeroed = {name for name, mask in masks.items() if not name.endswith("weight") or mask.ndim == 1}
    # unstructured propagation may zero biases and BN entries too; structured propagation only weights
    assert not (zeroed and load_pruner(pruner).structured)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # 256 training images: an epoch of a few batches is enough for a pruned entry to regrow
    data = dataclasses.replace(digits, train=ImageSet(digits.train.images[:256], digits.train.labels[:256]))
    train(model, data, DIGITS_TRAIN.model_copy(update={"epochs": 1}), seed=1, masks=masks, progress=False)
    changed = False
    for name, p in model.named_parameters():
        if name in masks:
            assert not p[~masks[name]].any(), f"{name}: a pruned entry regrew"
        changed |= not torch.equal(before[name], p)
    assert changed, "retraining did not update the surviving parameters"
    assert count_nonzero(model) <= round(0.15 * parent_nonzero) + 0.01 * parent_nonzero


def test_s_set_size_follows_the_reference_formula(digits, digits_cnn, resnet20):
    image = digits.normalize(digits.val.images[:1])
    # torchprune's |S| = ceil(3 ln(8 eta* / (1e-16 / eta))): 183 for resnet20 on 32x32, 178 for digits_cnn
    assert calibration_size(layer_output_sizes(resnet20, image), 1e-16, 10_000) == 183
    assert calibration_size(layer_output_sizes(digits_cnn, image), 1e-16, 10_000) == 178
    assert calibration_size(layer_output_sizes(digits_cnn, image), 1e-16, 179) == 90  # capped: ceil(179 / 2)
    assert calibration_size(layer_output_sizes(digits_cnn, image), 1e-16, 178) == 89


def test_ft_protects_the_last_compressible_layer_in_module_order():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 8, 3)
            self.head = nn.Conv2d(8, 4, 1)
            self.aux = nn.Conv2d(8, 4, 1)  # last in module order, like DeepLabV3's aux head

        def get_classifier(self):
            return self.head

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    model = TwoHeads()
    assert (classifier_name(model), last_layer_name(model)) == ("head", "aux")
    torch.manual_seed(0)
    images = torch.randn(4, 3, 8, 8)
    ctx = PruneContext(calibration=images, labels=torch.zeros(4, dtype=torch.long), seed=0,
                       last_layer=last_layer_name(model))
    masks = load_pruner("ft").plan(model, ctx)(0.5)
    assert "aux" not in masks and int(masks["head"].flatten(1).all(1).sum()) == 2


@pytest.mark.slow
def test_pfp_prunes_channels_and_their_producing_filters(digits, digits_cnn):
    parent_nonzero = count_nonzero(digits_cnn)
    prune_to_ratio(digits_cnn, load_pruner("pfp"), 0.7, parent_nonzero, context(digits_cnn, digits, size=64))
    layers = list(compressible_layers(digits_cnn).values())
    for producer, consumer in zip(layers[:3], layers[1:4]):  # the chain conv1 -> conv2 -> conv3 -> conv4
        dead_inputs = ~consumer.weight.detach().flatten(2).any(2).any(0)
        dead_filters = ~producer.weight.detach().flatten(1).any(1)
        assert dead_inputs.any()
        assert torch.equal(dead_inputs, dead_filters)


def test_target_outside_range_is_rejected(digits, digits_cnn):
    with pytest.raises(ValueError, match="target prune ratio"):
        prune_to_ratio(digits_cnn, load_pruner("wt"), 1.0, count_nonzero(digits_cnn), context(digits_cnn, digits))


def test_classifier_is_found_through_get_classifier(resnet20):
    assert classifier_name(resnet20) == "fc"
    assert isinstance(compressible_layers(resnet20)["fc"], nn.Linear)


def test_the_reference_size_search_tries_keep_first_and_stops_within_half_a_percent():
    tried = []

    def gap(kr):  # the kept fraction lags the keep ratio by 0.05, in steps of 0.001 (a coarse pruner)
        tried.append(kr)
        return math.floor((kr - 0.05) * 1000) / 1000 - 0.2

    kr = reference_keep_ratio(gap, keep=0.2, start_keep=1.0)
    assert tried[0] == 0.2
    assert abs(gap(kr)) < 0.005 * 0.2 + 5e-3 * kr  # brentq's xtol/rtol may stop just outside 0.5 %
    assert abs(kr - 0.25) < 0.01
    assert reference_keep_ratio(lambda kr: 0.0005, keep=0.2, start_keep=1.0) == 0.2  # within 0.5 % at once
