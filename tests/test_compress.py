"""Real compression of FT / PFP networks: the compressed net computes the masked net's logits
(max abs difference <= 1e-5, float32, eval mode) with strictly fewer params and MACs."""

import copy
import json

import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.analysis import load_run_networks
from bench.cli import main
from bench.compress import (
    TOLERANCE,
    CompressedConv2d,
    compress,
    count_macs,
    count_params,
    max_abs_diff,
    measure,
)
from bench.data.recipes import DIGITS_TRAIN
from bench.models import VGG16BN, WideResNet, create_model
from bench.pipeline.runner import run
from bench.pruning import (
    PruneContext,
    Pruner,
    apply_masks,
    compressible_layers,
    count_nonzero,
    last_layer_name,
    prune_to_ratio,
)
from bench.results.schema import RunConfig
from pruners.ft import FilterThresholding
from pruners.pfp import PFP

RATIOS = (0.5, 0.8)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small ops, busy 2-core machine


# ---- helpers -----------------------------------------------------------------------------------


def with_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random init with non-trivial BatchNorm: random affine (beta != 0, so FT's zeroed filters
    output relu(beta') != 0) and running statistics from a few train-mode forwards."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=generator))
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32, generator=generator))
    return model.eval()


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def check_compression(masked: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, object]:
    """Compress and assert the properties every structured network must have; returns both."""
    masked.eval()
    default, default_report = compress(masked, inputs[:1])
    assert max_abs_diff(masked, default, inputs) <= TOLERANCE
    assert default_report.params_after < default_report.params_before
    # below: every unread channel removed (gathered away even where a gather costs more)
    compressed, report = compress(masked, inputs[:1], min_gather_fraction=0.0)
    assert all(change.unread_inputs == 0 for change in report.layers)
    assert max_abs_diff(masked, compressed, inputs) <= TOLERANCE
    # channels_last (how `bench run` stores networks by default): compressing such a network, and
    # running either net on channels_last inputs, gives the same function
    cl = inputs.contiguous(memory_format=torch.channels_last)
    masked_cl = copy.deepcopy(masked).to(memory_format=torch.channels_last)
    assert max_abs_diff(masked_cl, compress(masked_cl, inputs[:1], min_gather_fraction=0.0)[0], cl) <= TOLERANCE
    assert max_abs_diff(masked_cl, compress(masked_cl, inputs[:1])[0], cl) <= TOLERANCE
    assert max_abs_diff(masked_cl, copy.deepcopy(compressed).to(memory_format=torch.channels_last), cl) <= TOLERANCE

    assert report.params_before == count_params(masked)
    assert report.params_after == count_params(compressed) < count_params(masked)
    assert count_macs(compressed, inputs) < count_macs(masked, inputs)
    # nothing dead survives: no all-zero output filter, no input channel no filter reads
    for w in weights(compressed):
        reads = w.ne(0).flatten(2).any(2) if w.dim() > 2 else w.ne(0)
        assert reads.any(1).all(), "an all-zero filter was kept"
        assert reads.any(0).all(), "an input channel nobody reads was kept"
    # no more conv/linear weights than the masked net's nonzero ones
    assert sum(w.numel() for w in weights(compressed)) <= sum(int(w.count_nonzero()) for w in weights(masked))
    assert report.barriers == []
    return compressed, report


class PlannedOnce(Pruner):
    """A pruner whose (expensive) plan was computed once, reused across target ratios."""

    def __init__(self, pruner: Pruner, model: nn.Module, ctx: PruneContext) -> None:
        self.name, self.structured, self.uses_data = pruner.name, pruner.structured, pruner.uses_data
        self._plan = pruner.plan(model, ctx)

    def plan(self, model, ctx):
        return self._plan


# ---- a finished digits run: FT and PFP, trained and retrained ---------------------------------


@pytest.fixture(scope="module")
def digits_run(one_thread, tmp_path_factory):
    recipe = DIGITS_TRAIN.model_copy(update={"epochs": 2, "batch_size": 32, "lr": 1e-2})
    config = RunConfig(
        dataset="digits", model="digits_cnn", pruners=("ft", "pfp"), suites=(), target_ratios=RATIOS,
        train=recipe, retrain=recipe.model_copy(update={"epochs": 1, "lr": 1e-3}), seed=0,
        calibration_size=32, channels_last=False, threads=1,
    )
    return run(config, tmp_path_factory.mktemp("compress"), progress=False)


@pytest.mark.slow
def test_trained_digits_networks_compress_exactly(digits_run):
    networks = load_run_networks(digits_run, control=False)
    inputs = networks.data.normalize(networks.data.test.images[:64])
    checked = 0
    for net in networks.networks:
        if net.pruner == "parent":
            continue
        _, report = check_compression(net.model, inputs)
        checked += 1
        layers = compressible_layers(net.model)
        for change in report.layers:
            alive = int(layers[change.name].weight.detach().flatten(1).ne(0).any(1).sum())
            if net.pruner == "ft":  # every kept filter is a nonzero one and is read by the next layer
                assert change.out_channels[1] == alive, change
            else:
                assert change.out_channels[1] <= alive, change
        if net.pruner == "ft":
            # propagation zeroed (and retraining kept zero) every column that reads a pruned filter's
            # constant output, so on this chain network there is no constant left to fold
            assert not any(change.folded_inputs for change in report.layers)
    assert checked == 2 * len(RATIOS)


@pytest.mark.slow
def test_cli_compress_prints_and_writes_the_comparison(digits_run, tmp_path, capsys):
    out = tmp_path / "compress.json"
    args = ["compress", str(digits_run), "--repeats", "2", "--warmup", "1", "--batch", "16", "--json", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [(n["pruner"], n["step"]) for n in report["networks"]] == [("ft", 1), ("ft", 2), ("pfp", 1), ("pfp", 2)]
    for n in report["networks"]:
        assert n["max_abs_diff"] <= TOLERANCE
        assert n["params_compressed"] < n["params_dense"] and n["macs_compressed"] < n["macs_dense"]
        assert n["latency_dense_ms"] > 0 and n["latency_compressed_ms"] > 0
        assert n["network"] in printed
    assert report["protocol"]["batch"] == 16 and report["protocol"]["repeats"] == 2
    assert report["protocol"]["threads"] == 1 and report["protocol"]["dtype"] == "float32"

    assert main(["compress", str(digits_run), "--pruner", "wt"]) == 2
    assert "not in this run" in capsys.readouterr().err


# ---- ResNet20 (residual sums; conv+BN projection shortcuts, and option-A zero-pad shortcuts) ---


@pytest.fixture(scope="module", params=["resnet20_cifar", "resnet20_cifar_a"])
def resnet20_bn(one_thread, request):
    torch.manual_seed(0)
    return with_bn_statistics(create_model(request.param, num_classes=10))


@pytest.mark.slow
@pytest.mark.parametrize("pruner_cls", [FilterThresholding, PFP])
def test_resnet20_compresses_exactly_at_several_ratios(resnet20_bn, pruner_cls):
    calibration = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ctx = PruneContext(calibration=calibration, labels=torch.zeros(4, dtype=torch.long), seed=0,
                       last_layer=last_layer_name(resnet20_bn), batch_size=4)
    pruner = PlannedOnce(pruner_cls(), resnet20_bn, ctx)
    parent_nonzero = count_nonzero(resnet20_bn)
    inputs = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    previous = count_params(resnet20_bn)
    for ratio in RATIOS:
        masked = copy.deepcopy(resnet20_bn)
        outcome = prune_to_ratio(masked, pruner, ratio, parent_nonzero, ctx, tolerance=0.03, max_steps=8)
        assert outcome.prune_ratio > 0.3
        _, report = check_compression(masked, inputs)
        assert report.params_after < previous  # more pruning, smaller network
        previous = report.params_after
        if pruner_cls is FilterThresholding:
            # the zeroed conv2 filters of a block are removed although the residual stream keeps
            # those channels: their constant is added to the sum instead
            assert report.scatters > 0
            conv2 = [c for c in report.layers if c.name.endswith("conv2")]
            assert all(c.out_channels[1] < c.out_channels[0] for c in conv2)
            # the 1x1 projection shortcuts (resnet20_cifar) lose filters too
            projections = [c for c in report.layers if c.name.endswith("shortcut.0")]
            assert len(projections) == (2 if isinstance(resnet20_bn.features.stage2[0].shortcut, nn.Sequential) else 0)
            assert all(c.out_channels[1] < c.out_channels[0] for c in projections)


def test_projection_shortcut_channels_are_removed_exactly(one_thread):
    """Masks set by hand (independent of the pruners): each projection shortcut of resnet20_cifar
    loses half of its filters and a third of its input channels, and the residual branch it is
    added to loses an overlapping, different half. Sum channels then are kept (one operand
    constant: BN of a zeroed filter), or constant (both), and all of it is exact."""
    torch.manual_seed(0)
    model = with_bn_statistics(create_model("resnet20_cifar", num_classes=10))
    projections = {
        name: module for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
    }
    assert list(projections) == ["features.stage2.0.shortcut.0", "features.stage3.0.shortcut.0"]
    with torch.no_grad():
        for name, conv in projections.items():
            block = model.get_submodule(name.removesuffix(".shortcut.0"))
            width = conv.out_channels
            conv.weight[: width // 2] = 0
            conv.weight[:, ::3] = 0
            block.conv2.weight[width // 4 : 3 * width // 4] = 0
    inputs = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    _, report = check_compression(model, inputs)
    changes = {change.name: change for change in report.layers}
    for name, conv in projections.items():
        change = changes[name]
        assert change.out_channels == (conv.out_channels, conv.out_channels // 2)
        assert change.in_channels == (conv.in_channels, conv.in_channels - len(range(0, conv.in_channels, 3)))
        assert change.gathered
        # sum channels where both operands were zeroed are constants, folded into the next conv
        after = changes[name.replace(".0.shortcut.0", ".1.conv1")]
        assert after.in_channels == (conv.out_channels, conv.out_channels * 3 // 4)
        assert after.folded_inputs > 0 and after.border_correction
    assert report.scatters > 0


# ---- other shapes: pre-activation WRN with 1x1 shortcuts, VGG, odd borders ---------------------


@pytest.mark.slow
@pytest.mark.parametrize("build", [lambda: WideResNet(10, 2), VGG16BN], ids=["wrn10_2", "vgg16_bn"])
def test_ft_on_other_architectures(build):
    torch.manual_seed(0)
    model = with_bn_statistics(build())
    calibration = torch.randn(2, 3, 32, 32)
    ctx = PruneContext(calibration=calibration, labels=torch.zeros(2, dtype=torch.long), seed=0,
                       last_layer=last_layer_name(model), batch_size=2)
    apply_masks(model, FilterThresholding().plan(model, ctx)(0.4))
    check_compression(model, torch.randn(4, 3, 32, 32))


def test_constant_channel_into_strided_padded_conv_is_exact_at_any_resolution():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
        nn.Conv2d(5, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()
    with torch.no_grad():
        model[0].weight[[1, 4]] = 0  # two zeroed filters ...
        model[1].bias[[1, 4]] = torch.tensor([1.5, -0.5])  # ... one outputs relu(1.5) != 0, one 0
        model[3].weight[2] = 0  # a zero filter with a bias: constant into the 1x1 conv
        model[3].bias[2] = 0.7
    compressed, report = compress(model, (1, 3, 9, 11))
    first, second, third, _fc = report.layers
    assert first.out_channels == (6, 4) and second.in_channels == (6, 4)
    assert second.folded_inputs == 1 and second.border_correction
    assert second.out_channels == (5, 4) and third.folded_inputs == 1 and not third.border_correction
    assert sum(isinstance(m, CompressedConv2d) and m.border is not None for m in compressed.modules()) == 1
    for shape in ((2, 3, 9, 11), (2, 3, 8, 8), (2, 3, 32, 17), (2, 3, 2, 3)):
        x = torch.randn(shape)
        assert max_abs_diff(model, compressed, x) <= TOLERANCE, shape


# ---- measurement -------------------------------------------------------------------------------


def test_macs_and_measure_protocol():
    model = create_model("digits_cnn", num_classes=10).eval()
    convs = 16 * 32 * 32 * 27 + 32 * 16 * 16 * 144 + 64 * 8 * 8 * 288 + 64 * 8 * 8 * 576
    assert count_macs(model, torch.zeros(2, 3, 32, 32)) == convs + 64 * 10
    threads = torch.get_num_threads()
    m = measure(model, (3, 32, 32), batch=4, warmup=1, repeats=3, threads=1)
    assert torch.get_num_threads() == threads
    assert m.params == count_params(model) and m.macs == convs + 64 * 10
    assert 0 < m.latency_min_ms <= m.latency_ms <= m.latency_max_ms
    assert m.protocol["batch"] == 4 and m.protocol["repeats"] == 3 and m.protocol["threads"] == 1
    assert m.protocol["channels_last"] is True and m.protocol["dtype"] == "float32"


def reference_macs(model: nn.Module, example: torch.Tensor) -> int:
    """The hand count `count_macs` replaced (forward hooks, one image): per Conv2d, output
    positions * out channels * in channels / groups * kh * kw; per Linear, rows * in * out."""
    total = 0

    def hook(module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += out[0, 0].numel() * module.out_channels * module.in_channels // module.groups * kh * kw
        else:
            total += out.numel() // module.out_features * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.inference_mode():
            model.eval()(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total


def _vit_tiny(fused_attention: bool) -> nn.Module:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10)
    for block in model.blocks:
        block.attn.fused_attn = fused_attention  # False: q @ k^T and attn @ v as explicit matmuls (bmm)
    return model


def _compressed_resnet20() -> nn.Module:
    """resnet20_cifar with filters and input columns zeroed by hand, compressed with gathers, so
    the count sees CompressedConv2d (in_index, border) and AddChannels."""
    torch.manual_seed(0)
    model = with_bn_statistics(create_model("resnet20_cifar", num_classes=10))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.in_channels > 3:
                module.weight[::4] = 0
                module.weight[:, 1::5] = 0
    compressed, _ = compress(model, (1, 3, 32, 32), min_gather_fraction=0.0)
    convs = [m for m in compressed.modules() if isinstance(m, CompressedConv2d)]
    assert any(m.in_index is not None for m in convs) and any(m.border is not None for m in convs)
    return compressed


MAC_MODELS = {
    "digits_cnn": lambda: create_model("digits_cnn", num_classes=10),
    "resnet20_cifar": lambda: create_model("resnet20_cifar", num_classes=10),
    "resnet20_cifar_a": lambda: create_model("resnet20_cifar_a", num_classes=10),
    "vit_tiny": lambda: _vit_tiny(fused_attention=True),
    "vit_tiny_unfused": lambda: _vit_tiny(fused_attention=False),
    "resnet20_compressed": _compressed_resnet20,
}


@pytest.mark.parametrize("name", list(MAC_MODELS))
def test_flop_counter_macs_equal_the_hand_count(name):
    torch.manual_seed(0)
    model = MAC_MODELS[name]().eval()
    example = torch.randn(2, 3, 32, 32)
    expected = reference_macs(model, example)
    assert count_macs(model, example) == expected > 0
    # what FlopCounterMode counts beyond conv + linear, and count_macs leaves out: the batched
    # matmuls of an unfused attention (q @ k^T, attn @ v); fused attention on the CPU counts nothing
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(example[:1])
    flops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    attention = flops.pop("aten.bmm", 0)
    assert set(flops) <= {"aten.convolution", "aten.addmm", "aten.mm"}
    assert sum(flops.values()) == 2 * expected
    if name == "vit_tiny_unfused":
        tokens, dim, depth = 8 * 8 + 1, 192, 12  # 32 / patch 4, plus the class token
        assert attention == depth * 2 * (2 * tokens * tokens * dim)
    else:
        assert attention == 0


class _Branchy(nn.Module):
    """A concatenation and a view: ops the analysis treats as barriers (they read every channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.conv2(torch.cat([h, 2 * h], 1))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 1).view(h.size(0), -1))


def test_barriers_get_their_full_input_back():
    torch.manual_seed(0)
    model = _Branchy().eval()
    with torch.no_grad():
        model.conv1.weight[[0, 5]] = 0
        model.bn1.bias[[0, 5]] = torch.tensor([0.8, 0.3])
        model.conv2.weight[:, 3] = 0  # a channel nobody reads before the barrier still goes in
    compressed, report = compress(model, (1, 3, 12, 12))
    assert report.layers[0].out_channels == (8, 6)
    assert report.scatters == 2  # both inputs of the concatenation
    assert report.barriers == ["cat", "view"]  # h.size(0) is read from the compact tensor
    for x in (torch.randn(3, 3, 12, 12), torch.randn(3, 3, 7, 9).contiguous(memory_format=torch.channels_last)):
        assert max_abs_diff(model, compressed, x) <= TOLERANCE
