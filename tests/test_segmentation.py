import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import ImageSet
from bench.data.segmentation import (
    IGNORE_INDEX,
    NUM_CLASSES,
    augment_train,
    augment_train_batch,
    confusion_matrix,
    evaluate_segmentation,
    iou_per_class,
    iter_pairs,
    load_segmentation_set,
    mean_iou,
    normalize_imagenet,
    open_sbd,
    open_voc,
    pixel_accuracy,
    preprocess_eval,
    segmentation_loss,
)
from bench.models.segmentation import create_segmentation_model
from bench.pruning import PruneContext, classifier_name, last_layer_name, load_pruner
from tests.voc_format import FIXTURE_CLASSES, write_sbd_fixture, write_voc_fixture

ALLOWED = set(range(NUM_CLASSES)) | {IGNORE_INDEX}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    written = write_voc_fixture(root, n_train=12, n_val=4, size=(40, 56), seed=0)
    return root, written


def test_voc_fixture_reads_back_through_torchvision(voc):
    root, written = voc
    base = root / "VOCdevkit" / "VOC2012"
    assert Image.open(next((base / "SegmentationClass").glob("*.png"))).mode == "P"
    for split in ("train", "val"):
        pairs = list(iter_pairs(open_voc(root, split)))
        assert len(pairs) == len(written[split])
        for (image, mask), (image_np, mask_np) in zip(pairs, written[split]):
            assert image.dtype == torch.uint8 and image.shape == (3, 40, 56)
            assert mask.dtype == torch.uint8 and mask.shape == (40, 56)
            assert np.array_equal(mask.numpy(), mask_np)  # palette PNG: lossless indices
            jpeg_error = np.abs(image.permute(1, 2, 0).numpy().astype(int) - image_np.astype(int)).mean()
            assert jpeg_error < 7  # JPEG: noise and chroma edges are lossy
    masks = torch.stack([m for _, m in iter_pairs(open_voc(root, "train"))])
    values = set(masks.unique().tolist())
    assert IGNORE_INDEX in values and 0 in values and values <= {0, IGNORE_INDEX, *FIXTURE_CLASSES}
    assert len(list(iter_pairs(open_voc(root, "trainval"), limit=5))) == 5


def test_sbd_fixture_reads_back(tmp_path):
    pytest.importorskip("scipy")
    written = write_sbd_fixture(tmp_path, n_train=2, n_val=3, size=(24, 30), seed=1)
    pairs = list(iter_pairs(open_sbd(tmp_path, "val")))
    assert len(pairs) == 3
    for (image, mask), (_, mask_np) in zip(pairs, written["val"]):
        assert image.shape == (3, 24, 30) and np.array_equal(mask.numpy(), mask_np)
    images, masks = load_segmentation_set("sbd", tmp_path, "train", size=16)
    assert images.shape == (2, 3, 16, 16) and masks.shape == (2, 16, 16)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        open_voc(tmp_path, "val")
    assert "VOCtrainval_11-May-2012.tar" in str(info.value)
    with pytest.raises(FileNotFoundError, match="benchmark.tgz"):
        open_sbd(tmp_path, "val")


def test_preprocess_eval_resizes_short_side_and_center_crops():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8, generator=gen)
    mask = torch.randint(0, NUM_CLASSES, (32, 48), dtype=torch.uint8, generator=gen)
    # short side already S: pure center crop, offset round((48 - 32) / 2) = 8
    out_image, out_mask = preprocess_eval(image, mask, 32)
    assert torch.equal(out_image, image[:, :, 8:40]) and torch.equal(out_mask, mask[:, 8:40])
    # portrait, non-integer scale, mask with ignore pixels and few values
    values = torch.tensor([0, 7, 15, IGNORE_INDEX], dtype=torch.uint8)
    mask = values[torch.randint(0, 4, (45, 31), generator=gen)]
    image = torch.randint(0, 256, (3, 45, 31), dtype=torch.uint8, generator=gen)
    for size in (17, 64):
        out_image, out_mask = preprocess_eval(image, mask, size)
        assert out_image.shape == (3, size, size) and out_image.dtype == torch.uint8
        assert out_mask.shape == (size, size) and out_mask.dtype == torch.uint8
        assert set(out_mask.unique().tolist()) <= {0, 7, 15, IGNORE_INDEX}  # nearest: no new values
    _, long_mask = preprocess_eval(image, mask.long(), 17)
    assert long_mask.dtype == torch.int64 and set(long_mask.unique().tolist()) <= ALLOWED


def test_augment_train_is_seeded_and_pads_with_ignore():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(1, 256, (3, 20, 30), dtype=torch.uint8, generator=gen)
    mask = torch.randint(0, NUM_CLASSES, (20, 30), dtype=torch.uint8, generator=gen)
    a = augment_train(image, mask, 24, torch.Generator().manual_seed(5))
    b = augment_train(image, mask, 24, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 24, 24) and a[1].shape == (24, 24) and a[0].dtype == torch.uint8
    # half scale: short side 12 -> resized to 12x18, padded bottom/right to 24x24
    small_image, small_mask = augment_train(image, mask, 24, torch.Generator().manual_seed(1), scale_range=(0.5, 0.5))
    assert bool((small_mask[12:] == IGNORE_INDEX).all()) and bool((small_mask[:, 18:] == IGNORE_INDEX).all())
    assert bool((small_image[:, 12:] == 0).all()) and bool((small_mask[:12, :18] != IGNORE_INDEX).all())
    images, masks = augment_train_batch(image[None].repeat(3, 1, 1, 1), mask[None].repeat(3, 1, 1), 16, gen)
    assert images.shape == (3, 3, 16, 16) and masks.shape == (3, 16, 16)
    assert set(masks.unique().tolist()) <= ALLOWED


def test_segmentation_set_checksum_and_validation(voc):
    root, _ = voc
    images, masks = load_segmentation_set("voc2012", root, "val", size=32)
    data = ImageSet(images, masks)
    again = ImageSet(*load_segmentation_set("voc2012", root, "val", size=32))
    assert len(data) == 4 and images.shape == (4, 3, 32, 32) and masks.dtype == torch.uint8
    assert data.checksum == again.checksum
    changed = masks.clone()
    changed[0, 0, 0] ^= 1
    assert ImageSet(images, changed).checksum != data.checksum
    assert data.subset(torch.tensor([1, 2])).checksum == ImageSet(images[1:3], masks[1:3]).checksum
    with pytest.raises(ValueError, match="labels shape"):
        ImageSet(images, masks[:, :16])


def test_confusion_matrix_matches_brute_force_loop():
    rng = np.random.default_rng(0)
    k = 5
    target = rng.integers(0, k, size=(3, 7, 9))
    target[rng.random(target.shape) < 0.2] = IGNORE_INDEX
    pred = rng.integers(0, k, size=target.shape)
    expected = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != IGNORE_INDEX:
            expected[t, p] += 1
    got = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target).to(torch.uint8), k)
    assert got.dtype == torch.int64 and np.array_equal(got.numpy(), expected)
    with pytest.raises(ValueError, match="target values"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 9, 2]), k)


def _class_model(num_classes: int) -> torch.nn.Module:
    """Predicts the class written in channel 0 of its (un-normalised) input."""

    class Lookup(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(x[:, 0].long(), num_classes).permute(0, 3, 1, 2).float()

    return Lookup()


def test_dataset_level_miou_differs_from_mean_of_batch_mious():
    # image A: all background, predicted right; image B: all class 1, half predicted as background
    target = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]], dtype=torch.uint8)
    pred = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [0, 0]]])
    images = torch.zeros((2, 3, 2, 2), dtype=torch.uint8)
    images[:, 0] = pred.to(torch.uint8)
    confusion = evaluate_segmentation(_class_model(2), images, target, lambda x: x.float(), batch_size=1)
    assert confusion.tolist() == [[4, 0], [2, 2]]
    # IoU0 = 4 / (4 + 6 - 4) = 2/3, IoU1 = 2 / (4 + 2 - 2) = 1/2
    assert mean_iou(confusion) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert pixel_accuracy(confusion) == pytest.approx(6 / 8)
    per_batch = [mean_iou(confusion_matrix(p[None], t[None], 2)) for p, t in zip(pred, target)]
    assert per_batch == pytest.approx([1.0, 0.25])  # batch A: class 1 absent (union 0) is skipped
    assert np.mean(per_batch) == pytest.approx(0.625) != pytest.approx(mean_iou(confusion))
    again = evaluate_segmentation(_class_model(2), images, target, lambda x: x.float(), batch_size=2)
    assert torch.equal(again, confusion)
    assert torch.isnan(iou_per_class(torch.tensor([[3, 0], [0, 0]])))[1]


def test_deeplabv3_resnet50_builds_offline_and_keeps_resolution():
    torch.manual_seed(0)
    model = create_segmentation_model("deeplabv3_resnet50", num_classes=21)
    assert model.get_classifier().out_channels == 21
    assert not any(isinstance(m, torch.nn.ReLU) and m.inplace for m in model.modules())
    x = normalize_imagenet(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    with torch.inference_mode():
        out = model.eval()(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 21, 64, 64)
        train_out = model.train()(x)
    assert set(train_out) == {"out", "aux"} and train_out["aux"].shape == (2, 21, 64, 64)


def test_ft_protects_deeplabs_aux_head_as_the_reference(one_thread):
    """torchprune's FT never prunes the last compressible layer in module order: for DeepLabV3 with an
    aux head that is the aux head's last conv, so the main head's class maps are prunable."""
    torch.manual_seed(0)
    model = create_segmentation_model("deeplabv3_resnet50", num_classes=21)
    assert (classifier_name(model), last_layer_name(model)) == ("classifier.4", "aux_classifier.4")
    ctx = PruneContext(calibration=torch.zeros(2, 3, 32, 32), labels=torch.zeros(2, 32, 32, dtype=torch.long),
                       seed=0, last_layer=last_layer_name(model))
    masks = load_pruner("ft").plan(model, ctx)(0.5)
    assert "aux_classifier.4" not in masks
    assert int(masks["classifier.4"].flatten(1).all(1).sum()) == 10  # 10 of 21 class maps kept (0.5 * 21, ties down)


def test_a_few_training_steps_reduce_the_loss(voc, one_thread):
    root, _ = voc
    pairs = list(iter_pairs(open_voc(root, "train")))
    torch.manual_seed(0)
    model = create_segmentation_model("fcn_tiny", num_classes=NUM_CLASSES).train()
    assert classifier_name(model) == "classifier.4"  # bench.pruning finds the main head, not the aux one
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(30):
        batch = [pairs[(4 * step + i) % len(pairs)] for i in range(4)]
        images, masks = augment_train_batch([p[0] for p in batch], [p[1] for p in batch], 32, gen, (0.8, 1.25))
        loss = segmentation_loss(model(normalize_imagenet(images)), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    images, masks = load_segmentation_set("voc2012", root, "val", size=32)
    confusion = evaluate_segmentation(model, images, masks, normalize_imagenet, batch_size=3)
    assert int(confusion.sum()) == int((masks != IGNORE_INDEX).sum())
    assert pixel_accuracy(confusion) > 0.6 and mean_iou(confusion) > 0.1


def test_segmentation_loss_handles_dicts_tensors_and_all_ignored():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4), dtype=torch.uint8)
    plain = segmentation_loss(logits, target).item()
    assert plain == pytest.approx(torch.nn.functional.cross_entropy(logits, target.long()).item())
    both = segmentation_loss({"out": logits, "aux": logits}, target).item()
    assert both == pytest.approx(1.5 * plain)
    ignored = segmentation_loss(logits, torch.full_like(target, IGNORE_INDEX))
    assert ignored.item() == 0.0
    ignored.backward()
