import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.core import registry  # noqa: E402
from bench.models import classifiers as bench_models  # noqa: E402
from bench.models import create_model  # noqa: E402
from bench.models.config import ModelConfig, model_config  # noqa: E402
from bench.models.segmentation import SEGMENTATION_MODELS
from bench.pruning import classifier_name, compressible_layers  # noqa: E402

EXPECTED_NAMES = (
    "resnet20_cifar",
    "resnet56_cifar",
    "resnet110_cifar",
    "resnet20_cifar_a",
    "resnet56_cifar_a",
    "resnet110_cifar_a",
    "vgg16_bn_cifar",
    "wrn16_8_cifar",
    "digits_cnn",
    "fashion_cnn",
)


# compressible layers with num_classes=10 (parameter counts and their sources: each model's ModelConfig)
EXPECTED_COMPRESSIBLE_LAYERS = {
    "resnet20_cifar": 22,
    "resnet56_cifar": 86,
    "resnet110_cifar": 167,
    "resnet20_cifar_a": 20,
    "resnet56_cifar_a": 56,
    "resnet110_cifar_a": 110,
    "vgg16_bn_cifar": 14,
    "wrn16_8_cifar": 17,
    "digits_cnn": 5,
    "fashion_cnn": 4,
}
REGISTERED = registry.builtin_names(registry.MODEL_GROUP)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    """Every bench model, created once through timm (wrn16_8 and vgg16 are large)."""
    torch.manual_seed(0)
    return {name: timm.create_model(name, num_classes=10).eval() for name in bench_models.BENCH_MODELS}


def test_bench_models_lists_registered_names() -> None:
    assert bench_models.BENCH_MODELS == EXPECTED_NAMES
    for name in EXPECTED_NAMES:
        assert timm.is_model(name)
        assert name in timm.list_models("*")


# the generic tests follow the registry (as timm's follow list_models()): a new model is tested unlisted
@pytest.mark.parametrize("name", bench_models.BENCH_MODELS)
def test_forward_shape_and_classifier(built: dict[str, nn.Module], name: str) -> None:
    model = built[name]
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert model.num_classes == 10
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == 10
    assert _linears(model)[-1] is head
    assert list(model.modules())[-1] is head


def test_every_model_has_an_entry_point_and_nothing_else_does() -> None:
    assert REGISTERED == sorted([*bench_models.BENCH_MODELS, *SEGMENTATION_MODELS])


# follows the entry points (as timm's tests follow list_models()): a new model is checked unlisted
@pytest.mark.parametrize("name", REGISTERED)
def test_parameter_count_and_classifier_match_the_config(name: str) -> None:
    config = model_config(name)
    with torch.device("meta"):  # counts and names only: no memory, no init time (deeplabv3_resnet101: 61M)
        model = create_model(name, num_classes=config.num_classes, in_chans=config.in_chans)
    assert _num_params(model) == config.reference_params, config.paper
    assert classifier_name(model) == config.classifier


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_compressible_layer_counts(built: dict[str, nn.Module], name: str) -> None:
    assert len(compressible_layers(built[name])) == EXPECTED_COMPRESSIBLE_LAYERS[name]


def test_model_config_errors() -> None:
    with pytest.raises(ValueError, match="resnet20_cifar"):
        model_config("resnet20_cifr")
    with pytest.raises(ValueError, match="input_size"):
        ModelConfig("broken", (32, 32), "fc", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        ModelConfig("broken", (3, 32, 32), "fc", 0)


@pytest.mark.parametrize("name", bench_models.BENCH_MODELS)
def test_activations_are_not_in_place(built: dict[str, nn.Module], name: str) -> None:
    # pruners record BatchNorm outputs through forward hooks; an in-place ReLU would overwrite them
    relus = [m for m in built[name].modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)


@pytest.mark.parametrize("name", bench_models.BENCH_MODELS)
def test_evaluation_runs_relus_after_batchnorm_in_place_with_bitwise_the_same_logits(
        built: dict[str, nn.Module], name: str) -> None:
    from bench.pipeline.training import inplace_relus

    model = built[name]
    in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels  # built with in_chans=3
    x = torch.randn(4, in_chans, *model_config(name).input_size[1:], generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x)
        with inplace_relus(model):
            flipped = sum(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
            logits = model(x)
    assert flipped > 0 and torch.equal(logits, expected)
    assert not any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))  # restored


def test_a_relu_whose_input_a_hook_keeps_that_follows_no_batchnorm_or_is_shared_stays_out_of_place() -> None:
    from bench.pipeline.training import inplace_relus

    torch.manual_seed(0)
    shared = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4), shared, nn.Conv2d(4, 4, 1), shared).eval()
    kept: list[torch.Tensor] = []
    model[1].register_forward_hook(lambda _m, _a, out: kept.append(out))
    with torch.inference_mode(), inplace_relus(model):
        assert [m.inplace for m in model if isinstance(m, nn.ReLU)] == [False, False, True, False, False]
        model(torch.randn(2, 1, 8, 8))
    assert (kept[0] < 0).any()  # the hooked BatchNorm output was not overwritten by its ReLU


def _projections(model: nn.Module) -> list[nn.Sequential]:
    return [m.shortcut for m in model.modules() if isinstance(getattr(m, "shortcut", None), nn.Sequential)]


def test_resnet20_matches_the_reference_layout(built: dict[str, nn.Module]) -> None:
    model = built["resnet20_cifar"]
    stages = [model.features.stage1, model.features.stage2, model.features.stage3]
    assert [len(stage) for stage in stages] == [3, 3, 3]
    assert all(isinstance(block, bench_models._BasicBlock) for stage in stages for block in stage)
    assert [stage[-1].conv2.out_channels for stage in stages] == [16, 32, 64]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21 and all(c.bias is None for c in convs)
    assert sum(c.kernel_size == (3, 3) for c in convs) == 19
    # conv 1x1 (stride 2, no bias) + BN where a stage starts, identity everywhere else
    projections = _projections(model)
    assert [stage[0].shortcut for stage in stages[1:]] == projections
    for shortcut, (in_ch, out_ch) in zip(projections, [(16, 32), (32, 64)]):
        conv, bn = shortcut
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (in_ch, out_ch, (1, 1), (2, 2))
        assert conv.bias is None and isinstance(bn, nn.BatchNorm2d) and bn.num_features == out_ch
    identities = [block.shortcut for stage in stages for block in stage if block.shortcut not in projections]
    assert len(identities) == 7 and all(isinstance(m, nn.Identity) for m in identities)
    assert not any(isinstance(m, bench_models._PadShortcut) for m in model.modules())
    assert model.get_classifier().in_features == 64


def test_reference_init(built: dict[str, nn.Module]) -> None:
    # conv weights ~ N(0, 2 / (k * k * out_channels)); BatchNorm weight 1, bias 0
    model = built["resnet56_cifar"]
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.weight.numel() >= 1024:
            kh, kw = module.kernel_size
            expected = (2 / (kh * kw * module.out_channels)) ** 0.5
            assert abs(float(module.weight.detach().std()) / expected - 1) < 0.15
        elif isinstance(module, nn.BatchNorm2d):
            assert bool((module.weight == 1).all()) and bool((module.bias == 0).all())


def test_reference_head_init(built: dict[str, nn.Module]) -> None:
    # VGG: Linear ~ N(0, 0.01), bias 0; WRN: default weights, bias 0 (torchprune's vgg.py, wrn.py)
    vgg, wrn = built["vgg16_bn_cifar"].fc, built["wrn16_8_cifar"].fc
    assert abs(float(vgg.weight.detach().std()) / 0.01 - 1) < 0.15
    assert not vgg.bias.any() and not wrn.bias.any()
    assert float(wrn.weight.detach().abs().max()) > 0.02  # not the VGG init


@pytest.mark.parametrize(("name", "blocks"), [("resnet56_cifar", 9), ("resnet110_cifar", 18)])
def test_deep_resnets_use_bottlenecks_as_the_reference(built: dict[str, nn.Module], name: str, blocks: int) -> None:
    model = built[name]
    stages = [model.features.stage1, model.features.stage2, model.features.stage3]
    assert [len(stage) for stage in stages] == [blocks] * 3
    assert all(isinstance(block, bench_models._Bottleneck) for stage in stages for block in stage)
    first = [stage[0] for stage in stages]
    assert [(b.conv1.out_channels, b.conv2.out_channels, b.conv3.out_channels) for b in first] == [
        (16, 16, 64), (32, 32, 128), (64, 64, 256)
    ]
    assert [b.conv2.stride for b in first] == [(1, 1), (2, 2), (2, 2)]  # the 3x3 conv is the strided one
    # every stage starts with a projection: 16 -> 64 channels (stride 1), then 64 -> 128, 128 -> 256
    assert [block.shortcut for block in first] == _projections(model)
    assert [(s[0].in_channels, s[0].out_channels, s[0].stride) for s in _projections(model)] == [
        (16, 64, (1, 1)), (64, 128, (2, 2)), (128, 256, (2, 2))
    ]
    assert model.get_classifier().in_features == 256


@pytest.mark.parametrize(("name", "blocks"), [("resnet20_cifar_a", 3), ("resnet56_cifar_a", 9), ("resnet110_cifar_a", 18)])
def test_option_a_resnets(built: dict[str, nn.Module], name: str, blocks: int) -> None:
    model = built[name]
    stages = [model.features.stage1, model.features.stage2, model.features.stage3]
    assert [len(stage) for stage in stages] == [blocks] * 3
    assert all(isinstance(block, bench_models._BasicBlock) for stage in stages for block in stage)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6 * blocks + 1
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    assert model.get_classifier().in_features == 64


def test_option_a_shortcuts_are_parameter_free(built: dict[str, nn.Module]) -> None:
    model = built["resnet20_cifar_a"]
    shortcuts = [m for m in model.modules() if isinstance(m, bench_models._PadShortcut)]
    assert len(shortcuts) == 2
    x = torch.randn(2, 16, 32, 32)
    out = shortcuts[0](x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_cifar_resnet_options() -> None:
    assert isinstance(bench_models.CifarResNet(44).features.stage1[0], bench_models._Bottleneck)
    assert isinstance(bench_models.CifarResNet(38).features.stage1[0], bench_models._BasicBlock)
    model = bench_models.CifarResNet(20, shortcut="pad", bottleneck=True).eval()
    assert isinstance(model.features.stage1[0].shortcut, bench_models._PadShortcut)  # 16 -> 64 channels
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="shortcut"):
        bench_models.CifarResNet(20, shortcut="option-c")
    with pytest.raises(ValueError, match="6n"):
        bench_models.CifarResNet(21)


def test_vgg16_bn_layout(built: dict[str, nn.Module]) -> None:
    model = built["vgg16_bn_cifar"]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert all(c.bias is not None for c in convs)
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert len(_linears(model)) == 1 and model.get_classifier().in_features == 512
    assert _num_params(model) == 14_728_266


def test_wrn16_8_layout(built: dict[str, nn.Module]) -> None:
    model = built["wrn16_8_cifar"]
    stages = [model.features.stage1, model.features.stage2, model.features.stage3]
    assert [len(stage) for stage in stages] == [2, 2, 2]
    assert [stage[0].conv1.out_channels for stage in stages] == [128, 256, 512]
    projections = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(projections) == 3
    assert isinstance(model.features.final_bn, nn.BatchNorm2d)
    # Zagoruyko & Komodakis (2016), Table 4: 11.0M parameters.
    assert _num_params(model) == 10_961_370


def test_digits_cnn_layout(built: dict[str, nn.Module]) -> None:
    model = built["digits_cnn"]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 16, 1),
        (16, 32, 2),
        (32, 64, 2),
        (64, 64, 1),
    ]
    assert all(c.bias is None for c in convs)


def test_fashion_cnn_halves_the_resolution_first_and_costs_a_quarter_of_digits_cnn() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    def macs(name: str) -> float:
        model = create_model(name, num_classes=10, in_chans=1).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)
        return counter.get_total_flops() / 2

    model = create_model("fashion_cnn", num_classes=10, in_chans=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (1, 16, 5, 2), (16, 32, 3, 2), (32, 48, 3, 1),
    ]
    assert macs("fashion_cnn") == 16 * 25 * 14 * 14 + 32 * 16 * 9 * 7 * 7 + 48 * 32 * 9 * 7 * 7 + 48 * 10
    assert macs("fashion_cnn") < macs("digits_cnn") / 3.5


def test_num_classes_and_in_chans_are_forwarded() -> None:
    model = create_model("digits_cnn", num_classes=7, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert model.num_classes == 7


@pytest.mark.parametrize("name", bench_models.BENCH_MODELS)
def test_pretrained_raises(name: str) -> None:
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model(name, pretrained=True)


def test_unknown_kwarg_is_not_swallowed() -> None:
    with pytest.raises(TypeError):
        timm.create_model("digits_cnn", no_such_option=1)


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ValueError, match="resnet20_cifar"):
        create_model("resnet20_cifr", num_classes=10)


def test_timm_builtin_through_create_model() -> None:
    model = create_model("resnet18", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.get_classifier().out_features == 10
