"""CIFAR-style networks registered with timm's model registry.

Importing this module registers every name in ``BENCH_MODELS`` so that
``timm.create_model("resnet20_cifar", num_classes=10)`` works; each has a
:class:`bench.models.config.ModelConfig` beside its builder (``RESNET20_CIFAR`` ...), which its
``prunebench.models`` entry point names. All models expect
32x32 NCHW inputs and accept ``num_classes`` (default 10) and ``in_chans``
(default 3). No pretrained weights exist for them; train with ``bench run``.

``resnet{20,56,110}_cifar``, ``vgg16_bn_cifar`` and ``wrn16_8_cifar`` compute (on 32x32 inputs)
the same functions as the CIFAR models torchprune vendors (``util/external/cnn/models/cifar``:
resnet.py, vgg.py, wrn.py), with their parameter counts and their parameters registered in the
same order. ``resnet{20,56,110}_cifar_a`` are He et al.'s option-A BasicBlock ResNets
(zero-padding shortcuts).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from bench.models.config import ModelConfig

__all__ = [
    "BENCH_MODELS",
    "CifarResNet",
    "DigitsCNN",
    "FashionCNN",
    "VGG16BN",
    "WideResNet",
]

# Keys that timm.create_model always forwards to entrypoints; they only matter
# for loading published weights, which these architectures do not have.
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")

_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False, kernel_size: int = 3) -> nn.Sequential:
    """conv (3x3 unless told) -> BatchNorm -> ReLU."""
    # ReLU is not in-place: pruners record BN outputs through forward hooks.
    return nn.Sequential(_conv3x3(in_ch, out_ch, stride, bias, kernel_size), nn.BatchNorm2d(out_ch), nn.ReLU())


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class _Classifier(nn.Module):
    """Feature extractor -> global average pool -> single Linear head.

    Subclasses only build ``features``; the head, ``forward`` and the timm-style
    ``get_classifier`` are shared.
    """

    def __init__(self, features: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = num_features
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_features, num_classes)
        _init_weights(self)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class _PadShortcut(nn.Module):
    """Option-A shortcut of He et al. (2016): subsample spatially, zero-pad channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_ch - in_ch
        self.channel_pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.channel_pad))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, channel_pad={self.channel_pad}"


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Projection shortcut (option B of He et al. (2016)): 1x1 conv (stride ``stride``) -> BatchNorm."""
    return nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


# Residual shortcuts of CifarResNet where a block changes resolution or width: "projection" is
# the reference's (torchprune / pytorch-classification), "pad" the parameter-free option A.
_SHORTCUTS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "projection": _projection,
    "pad": _PadShortcut,
}


def _shortcut(kind: str, in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """Identity where the block keeps shape, else the ``kind`` shortcut (see ``_SHORTCUTS``)."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return _SHORTCUTS[kind](in_ch, out_ch, stride)


class _BasicBlock(nn.Module):
    """Post-activation residual block: conv-BN-ReLU-conv-BN, add shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str = "projection") -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU()
        self.shortcut = _shortcut(shortcut, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class _Bottleneck(nn.Module):
    """Post-activation bottleneck block: 1x1 conv to ``out_ch // 4``, 3x3 conv (strided), 1x1 conv
    to ``out_ch``, each followed by BN (and ReLU but the last); add shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str = "projection") -> None:
        super().__init__()
        if out_ch % self.expansion:
            raise ValueError(f"bottleneck output width must be a multiple of {self.expansion}, got {out_ch}")
        mid = out_ch // self.expansion
        self.conv1 = _conv1x1(in_ch, mid)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(mid, mid, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU()
        self.conv3 = _conv1x1(mid, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu3 = nn.ReLU()
        self.shortcut = _shortcut(shortcut, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


class _PreActBlock(nn.Module):
    """Pre-activation residual block of Wide ResNets: BN-ReLU-conv-BN-ReLU-conv + shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU()
        self.conv2 = _conv3x3(out_ch, out_ch)
        changes_shape = stride != 1 or in_ch != out_ch
        self.shortcut = (
            nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False) if changes_shape else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        # As in the reference WRN code, the 1x1 projection reads the
        # pre-activated input while the identity skip carries the raw input.
        skip = x if self.shortcut is None else self.shortcut(pre)
        return out + skip


def _stage(
    block: Callable[[int, int, int], nn.Module], in_ch: int, out_ch: int, num_blocks: int, stride: int
) -> nn.Sequential:
    """``num_blocks`` blocks; only the first one changes stride and width."""
    blocks = [block(in_ch, out_ch, stride)]
    blocks += [block(out_ch, out_ch, 1) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _residual_stages(
    block: Callable[[int, int, int], nn.Module], widths: Sequence[int], num_blocks: int
) -> list[tuple[str, nn.Sequential]]:
    """Stages ``stage1..`` from ``widths[0]`` (stem width) through ``widths[1:]``;
    the first stage keeps resolution, each later one halves it."""
    stages = []
    for i, (in_ch, out_ch) in enumerate(zip(widths[:-1], widths[1:])):
        stride = 1 if i == 0 else 2
        stages.append((f"stage{i + 1}", _stage(block, in_ch, out_ch, num_blocks, stride)))
    return stages


class CifarResNet(_Classifier):
    """CIFAR ResNet of He et al. (2016), depth = 6n + 2: a 3x3 conv-BN-ReLU stem (16 channels),
    three stages of n blocks (base widths 16/32/64, strides 1/2/2), global average pool, Linear.

    Defaults follow the reference CIFAR ResNet that torchprune vendors (``cifar/resnet.py`` of
    pytorch-classification): ``shortcut="projection"`` (1x1 conv + BN wherever a block changes
    resolution or width, identity elsewhere) and ``bottleneck=None``, i.e. the reference's rule
    *Bottleneck blocks (expansion 4, head ``Linear(256, ...)``) for depth >= 44, BasicBlocks
    below*, so ``resnet56_cifar`` / ``resnet110_cifar`` are bottleneck networks as in the
    reference, not the BasicBlock ResNet-56/110 of the paper. ``shortcut="pad"`` with
    ``bottleneck=False`` is the paper's option-A network (parameter-free zero-padding
    shortcuts; the ``resnet*_cifar_a`` models).
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str = "projection",
        bottleneck: bool | None = None,
    ) -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        if shortcut not in _SHORTCUTS:
            raise ValueError(f"shortcut must be one of {', '.join(_SHORTCUTS)}, got {shortcut!r}")
        if bottleneck is None:
            bottleneck = depth >= 44
        block_cls = _Bottleneck if bottleneck else _BasicBlock
        expansion = _Bottleneck.expansion if bottleneck else 1
        widths = (16, *(expansion * w for w in (16, 32, 64)))
        layers = [("stem", _conv_bn_relu(in_chans, widths[0]))]
        layers += _residual_stages(partial(block_cls, shortcut=shortcut), widths, (depth - 2) // 6)
        super().__init__(nn.Sequential(OrderedDict(layers)), widths[-1], num_classes)
        self.depth = depth
        self.shortcut = shortcut
        self.bottleneck = bottleneck


class WideResNet(_Classifier):
    """Wide ResNet-depth-k of Zagoruyko & Komodakis (2016), no dropout."""

    def __init__(
        self, depth: int = 16, widen_factor: int = 8, num_classes: int = 10, in_chans: int = 3
    ) -> None:
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n + 4 with n >= 1, got {depth}")
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        layers: list[tuple[str, nn.Module]] = [("stem", _conv3x3(in_chans, widths[0]))]
        layers += _residual_stages(_PreActBlock, widths, (depth - 4) // 6)
        layers += [("final_bn", nn.BatchNorm2d(widths[-1])), ("final_relu", nn.ReLU())]
        super().__init__(nn.Sequential(OrderedDict(layers)), widths[-1], num_classes)
        nn.init.zeros_(self.fc.bias)  # the reference's head init (default weights, zero bias)
        self.depth = depth
        self.widen_factor = widen_factor


class VGG16BN(_Classifier):
    """VGG16 with BatchNorm for CIFAR: 13 conv-BN-ReLU layers, 5 max-pools, one Linear.

    The five pools reduce 32x32 inputs to 1x1, so the shared global pool is a no-op there.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        layers: list[nn.Module] = []
        in_ch = in_chans
        for item in _VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(_conv_bn_relu(in_ch, int(item), bias=True))
                in_ch = int(item)
        super().__init__(nn.Sequential(*layers), in_ch, num_classes)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)  # the reference's head init
        nn.init.zeros_(self.fc.bias)


class DigitsCNN(_Classifier):
    """Small four-conv network for upsampled digit images."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        features = nn.Sequential(
            _conv_bn_relu(in_chans, 16),
            _conv_bn_relu(16, 32, stride=2),
            _conv_bn_relu(32, 64, stride=2),
            _conv_bn_relu(64, 64),
        )
        super().__init__(features, 64, num_classes)


class FashionCNN(_Classifier):
    """Three-conv network for 28x28 grayscale (Fashion-MNIST): a 5x5 stride-2 stem to 14x14, a
    stride-2 conv to 7x7, one more conv there; 0.98 M MACs per image (digits_cnn: 3.7 M).

    Chosen by measurement to fit the Fashion-MNIST protocol on 2 CPU cores (docs/datasets.md, benchmarks/
    fashion_mnist_model.py): halving the resolution first makes both training and evaluation ~4x
    cheaper than digits_cnn at >= 90 % test accuracy with 24 epochs."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        features = nn.Sequential(
            _conv_bn_relu(in_chans, 16, stride=2, kernel_size=5),
            _conv_bn_relu(16, 32, stride=2),
            _conv_bn_relu(32, 48),
        )
        super().__init__(features, 48, num_classes)


_registered: list[str] = []


def _register(config: ModelConfig, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder`` with timm under ``config.name`` (its metadata, `config`, is what the
    model's ``prunebench.models`` entry point names); returns the entrypoint."""
    name = config.name

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(
                f"No pretrained weights are published for '{name}'; "
                "train it with `bench run` and load the resulting checkpoint."
            )
        for key in _TIMM_ONLY_KWARGS:
            kwargs.pop(key, None)
        return builder(**kwargs)

    # timm registers an entrypoint under its __name__.
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f"Build '{name}' (random init; kwargs: num_classes, in_chans)."
    _registered.append(name)
    return register_model(entrypoint)


_CIFAR_INPUT = (3, 32, 32)
# the reference implementations of the CIFAR networks: those torchprune vendors
_TORCHPRUNE = "reference code: torchprune's util/external/cnn/models/cifar/"
_HE_2016 = ("He et al. (2016), Deep Residual Learning for Image Recognition, CVPR, https://arxiv.org/abs/1512.03385")
_RESNET_REFERENCE = f"{_HE_2016}; {_TORCHPRUNE}resnet.py (pytorch-classification's CIFAR ResNet)"
_OPTION_A = f"{_HE_2016}, Table 6 (option A): 0.27M, 0.85M, 1.7M parameters for depth 20, 56, 110"

RESNET20_CIFAR = ModelConfig("resnet20_cifar", _CIFAR_INPUT, "fc", 272_474, paper=_RESNET_REFERENCE)
resnet20_cifar = _register(RESNET20_CIFAR, partial(CifarResNet, 20))
RESNET56_CIFAR = ModelConfig("resnet56_cifar", _CIFAR_INPUT, "fc", 869_530, paper=_RESNET_REFERENCE)
resnet56_cifar = _register(RESNET56_CIFAR, partial(CifarResNet, 56))
RESNET110_CIFAR = ModelConfig("resnet110_cifar", _CIFAR_INPUT, "fc", 1_704_154, paper=_RESNET_REFERENCE)
resnet110_cifar = _register(RESNET110_CIFAR, partial(CifarResNet, 110))
# He et al.'s option-A networks: BasicBlocks at every depth, zero-padding shortcuts
RESNET20_CIFAR_A = ModelConfig("resnet20_cifar_a", _CIFAR_INPUT, "fc", 269_722, paper=_OPTION_A)
resnet20_cifar_a = _register(RESNET20_CIFAR_A, partial(CifarResNet, 20, shortcut="pad", bottleneck=False))
RESNET56_CIFAR_A = ModelConfig("resnet56_cifar_a", _CIFAR_INPUT, "fc", 853_018, paper=_OPTION_A)
resnet56_cifar_a = _register(RESNET56_CIFAR_A, partial(CifarResNet, 56, shortcut="pad", bottleneck=False))
RESNET110_CIFAR_A = ModelConfig("resnet110_cifar_a", _CIFAR_INPUT, "fc", 1_727_962, paper=_OPTION_A)
resnet110_cifar_a = _register(RESNET110_CIFAR_A, partial(CifarResNet, 110, shortcut="pad", bottleneck=False))
VGG16_BN_CIFAR = ModelConfig(
    "vgg16_bn_cifar", _CIFAR_INPUT, "fc", 14_728_266,
    paper="Simonyan & Zisserman (2015), Very Deep Convolutional Networks for Large-Scale Image Recognition, ICLR, "
          f"https://arxiv.org/abs/1409.1556 (with BatchNorm, one Linear head); {_TORCHPRUNE}vgg.py",
)
vgg16_bn_cifar = _register(VGG16_BN_CIFAR, VGG16BN)
WRN16_8_CIFAR = ModelConfig(
    "wrn16_8_cifar", _CIFAR_INPUT, "fc", 10_961_370,
    paper="Zagoruyko & Komodakis (2016), Wide Residual Networks, BMVC, https://arxiv.org/abs/1605.07146, "
          f"Table 4: 11.0M parameters; {_TORCHPRUNE}wrn.py",
)
wrn16_8_cifar = _register(WRN16_8_CIFAR, partial(WideResNet, 16, 8))
# prunebench's own networks (no paper): their counts pin the architectures the committed results used
DIGITS_CNN = ModelConfig("digits_cnn", (3, 32, 32), "fc", 61_338)  # digits upsampled to 3x32x32
digits_cnn = _register(DIGITS_CNN, DigitsCNN)
FASHION_CNN = ModelConfig("fashion_cnn", (1, 28, 28), "fc", 19_514)  # 20,314 with in_chans=3
fashion_cnn = _register(FASHION_CNN, FashionCNN)

BENCH_MODELS: tuple[str, ...] = tuple(_registered)
