import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench import models as bench_models  # noqa: E402

EXPECTED_NAMES = (
    "resnet20_cifar",
    "resnet56_cifar",
    "resnet110_cifar",
    "vgg16_bn_cifar",
    "wrn16_8_cifar",
    "digits_cnn",
)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    """Every bench model, created once through timm (wrn16_8 and vgg16 are large)."""
    torch.manual_seed(0)
    return {name: timm.create_model(name, num_classes=10).eval() for name in EXPECTED_NAMES}


def test_bench_models_lists_registered_names() -> None:
    assert bench_models.BENCH_MODELS == EXPECTED_NAMES
    for name in EXPECTED_NAMES:
        assert timm.is_model(name)
        assert name in timm.list_models("*")


@pytest.mark.parametrize("name", EXPECTED_NAMES)
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


def test_resnet20_param_count(built: dict[str, nn.Module]) -> None:
    assert _num_params(built["resnet20_cifar"]) == 269_722


def test_resnet56_structure_and_param_count(built: dict[str, nn.Module]) -> None:
    model = built["resnet56_cifar"]
    stages = [model.features.stage1, model.features.stage2, model.features.stage3]
    assert [len(stage) for stage in stages] == [9, 9, 9]
    # He et al. (2016), Table 6: 0.85M parameters.
    assert _num_params(model) == 853_018


def test_resnet110_param_count(built: dict[str, nn.Module]) -> None:
    # He et al. (2016), Table 6: 1.7M parameters.
    assert _num_params(built["resnet110_cifar"]) == 1_727_962


def test_resnet_shortcuts_are_parameter_free(built: dict[str, nn.Module]) -> None:
    model = built["resnet20_cifar"]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    shortcuts = [m for m in model.modules() if isinstance(m, bench_models._PadShortcut)]
    assert len(shortcuts) == 2
    x = torch.randn(2, 16, 32, 32)
    out = shortcuts[0](x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


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


def test_num_classes_and_in_chans_are_forwarded() -> None:
    model = bench_models.create_model("digits_cnn", num_classes=7, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert model.num_classes == 7


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_pretrained_raises(name: str) -> None:
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model(name, pretrained=True)


def test_unknown_kwarg_is_not_swallowed() -> None:
    with pytest.raises(TypeError):
        timm.create_model("digits_cnn", no_such_option=1)


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ValueError, match="resnet20_cifar"):
        bench_models.create_model("resnet20_cifr", num_classes=10)


def test_timm_builtin_through_create_model() -> None:
    model = bench_models.create_model("resnet18", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.get_classifier().out_features == 10
