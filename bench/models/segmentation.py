"""Segmentation networks: :class:`SegmentationModel`, the registry and :func:`create_segmentation_model`.

:data:`SEGMENTATION_MODELS` names torchvision's DeepLabV3 / FCN builders (re-wrapped with the same
submodule names, so torchvision state dicts load unchanged) and ``fcn_tiny``, a ~73k-parameter
toy network for tests and smoke runs. Models start from random weights (no network access) unless
``pretrained`` / ``pretrained_backbone`` ask for torchvision's weights. In eval mode a model returns
the "out" logits (N, K, H, W); in train mode a dict with "out" and, with an aux head, "aux"
(:func:`bench.data.segmentation.evaluation.segmentation_loss` takes either). Each model's
:class:`bench.models.config.ModelConfig` (``DEEPLABV3_RESNET50`` ...) is declared with its builder and
named by its ``prunebench.models`` entry point.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.data.segmentation.data import NUM_CLASSES
from bench.models.config import ModelConfig


class SegmentationModel(nn.Module):
    """backbone -> classifier (+ aux_classifier), upsampled to the input size.

    Same submodule names as torchvision's segmentation models (``backbone``, ``classifier``,
    ``aux_classifier``), so their state dicts load unchanged. In eval mode ``forward`` returns the
    "out" logits tensor (N, K, H, W) and skips the aux head; in train mode it returns a dict with
    "out" and, when there is an aux head, "aux". ``get_classifier()`` is the final 1x1 conv of the
    main head (timm convention, used by ``bench.pruning.classifier_name``).
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module, aux_classifier: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def get_classifier(self) -> nn.Module:
        head = self.classifier
        return head[-1] if isinstance(head, nn.Sequential) else head

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear", align_corners=False)
        if not self.training:
            return out
        result = {"out": out}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


def _tiny_backbone(width: int = 16) -> nn.Module:
    """Output stride 4 toy backbone for tests: 'aux' after stride 4, 'out' after a dilated stage."""
    from torchvision.models._utils import IntermediateLayerGetter

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())

    body = nn.Sequential(
        OrderedDict(
            stem=block(3, width, stride=2),
            layer1=block(width, 2 * width, stride=2),
            layer2=nn.Sequential(block(2 * width, 4 * width, dilation=2), block(4 * width, 4 * width, dilation=2)),
        )
    )
    return IntermediateLayerGetter(body, return_layers={"layer1": "aux", "layer2": "out"})


def _fcn_tiny(num_classes: int, aux_loss: bool, **_: Any) -> nn.Module:
    from torchvision.models.segmentation.fcn import FCNHead

    width = 16
    aux = FCNHead(2 * width, num_classes) if aux_loss else None
    return SegmentationModel(_tiny_backbone(width), FCNHead(4 * width, num_classes), aux)


def _torchvision_builder(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, aux_loss: bool, pretrained: bool, pretrained_backbone: bool) -> nn.Module:
        from torchvision.models import segmentation

        builder = getattr(segmentation, name)
        weights = "DEFAULT" if pretrained else None
        weights_backbone = "DEFAULT" if pretrained_backbone and not pretrained else None
        try:
            net = builder(weights=weights, weights_backbone=weights_backbone, num_classes=num_classes, aux_loss=aux_loss)
        except OSError as error:  # URLError and friends: no network and nothing in the torch hub cache
            import torch.hub

            raise RuntimeError(
                f"could not fetch pretrained weights for {name} ({error}); without network access place the "
                f"checkpoint files in {Path(torch.hub.get_dir()) / 'checkpoints'} or use pretrained=False"
            ) from error
        return SegmentationModel(net.backbone, net.classifier, net.aux_classifier)

    return build


SEGMENTATION_MODELS: dict[str, Callable[..., nn.Module]] = {}


def _register(config: ModelConfig, builder: Callable[..., nn.Module]) -> ModelConfig:
    """Add ``builder`` to :data:`SEGMENTATION_MODELS` under ``config.name``; returns `config`, what the
    model's ``prunebench.models`` entry point names."""
    SEGMENTATION_MODELS[config.name] = builder
    return config


_VOC_INPUT = (3, 513, 513)  # the paper's crop (bench.data.builtin.VOC_SIZE)
# torchvision's parameter counts, aux head included: its COCO_WITH_VOC_LABELS_V1 weights' num_params
_TORCHVISION = "reference code and parameter count: torchvision.models.segmentation"
_DEEPLABV3 = ("Chen et al. (2017), Rethinking Atrous Convolution for Semantic Image Segmentation, "
              "https://arxiv.org/abs/1706.05587")
_FCN = ("Long, Shelhamer & Darrell (2015), Fully Convolutional Networks for Semantic Segmentation, CVPR, "
        "https://arxiv.org/abs/1411.4038")


def _register_torchvision(name: str, reference_params: int, paper: str) -> ModelConfig:
    """Register torchvision's segmentation builder `name` (main head ``classifier.4``, 21 VOC classes)."""
    config = ModelConfig(name, _VOC_INPUT, "classifier.4", reference_params, NUM_CLASSES, f"{paper}; {_TORCHVISION}.{name}")
    return _register(config, _torchvision_builder(name))


DEEPLABV3_RESNET50 = _register_torchvision("deeplabv3_resnet50", 42_004_074, _DEEPLABV3)
DEEPLABV3_RESNET101 = _register_torchvision("deeplabv3_resnet101", 60_996_202, _DEEPLABV3)
DEEPLABV3_MOBILENET_V3_LARGE = _register_torchvision(
    "deeplabv3_mobilenet_v3_large", 11_029_328,
    f"{_DEEPLABV3}; Howard et al. (2019), Searching for MobileNetV3, https://arxiv.org/abs/1905.02244",
)
FCN_RESNET50 = _register_torchvision("fcn_resnet50", 35_322_218, _FCN)
# ~73k parameters, for tests and smoke runs (prunebench's own, no paper)
FCN_TINY = _register(ModelConfig("fcn_tiny", _VOC_INPUT, "classifier.4", 72_802, NUM_CLASSES), _fcn_tiny)


def create_segmentation_model(
    name: str = "deeplabv3_resnet50",
    num_classes: int = NUM_CLASSES,
    pretrained: bool = False,
    pretrained_backbone: bool = False,
    aux_loss: bool = True,
) -> SegmentationModel:
    """A :class:`SegmentationModel`; random init (no network access) unless weights are asked for.

    ``pretrained`` loads torchvision's COCO-with-VOC-labels weights (num_classes must be 21);
    ``pretrained_backbone`` loads ImageNet backbone weights only. Both come from the torch hub
    cache or the network. Every ReLU is made non-inplace (pruners hook activations).
    """
    if name not in SEGMENTATION_MODELS:
        raise ValueError(f"unknown segmentation model {name!r}; available: {', '.join(sorted(SEGMENTATION_MODELS))}")
    if name == "fcn_tiny" and (pretrained or pretrained_backbone):
        raise ValueError("fcn_tiny has no pretrained weights")
    model = SEGMENTATION_MODELS[name](
        num_classes=num_classes, aux_loss=aux_loss, pretrained=pretrained, pretrained_backbone=pretrained_backbone
    )
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    assert isinstance(model, SegmentationModel)
    return model
