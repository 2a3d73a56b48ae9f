"""The tp-* pruners (pruners/tp.py): Torch-Pruning's criteria as masks through prunebench's propagation.

The masked network must compute what Torch-Pruning's physically pruned network computes (same
channels, same outputs), on the models TP can prune, and refuse the ones it cannot in one line.
"""

import copy
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.cli import main
from bench.core.registry import PluginError
from bench.models import create_model
from bench.pruning import (
    PruneContext,
    apply_masks,
    count_nonzero,
    last_layer_name,
    load_pruner,
    propagate_compression,
    prune_to_ratio,
)

tp = pytest.importorskip("torch_pruning", reason="Torch-Pruning is not installed: pip install 'prunebench[torch-pruning]'")

pytestmark = pytest.mark.usefixtures("one_thread")

TP_PRUNERS = ["tp-l1", "tp-l2", "tp-taylor", "tp-hessian"]


def generic_network(name: str) -> nn.Module:
    """A seeded random network in eval mode with random BN statistics and affine (shifts positive,
    so a pruned channel whose BN were left alone would feed a constant into its consumers)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_(0.0, 0.1, generator=generator)
            bn.running_var.uniform_(0.5, 2.0, generator=generator)
            bn.weight.uniform_(0.5, 1.5, generator=generator)
            bn.bias.uniform_(0.5, 1.5, generator=generator)
    return model


def random_context(model: nn.Module, images: int, batch_size: int = 64) -> PruneContext:
    generator = torch.Generator().manual_seed(2)
    return PruneContext(calibration=torch.randn(images, 3, 32, 32, generator=generator),
                        labels=torch.randint(0, 10, (images,), generator=generator),
                        seed=0, last_layer=last_layer_name(model), batch_size=batch_size)


def tp_importance(pruner: str, model: nn.Module, ctx: PruneContext):
    """TP's importance for `pruner`, gradients over all S images prepared the way TP's examples do."""
    if pruner in ("tp-l1", "tp-l2"):
        return tp.importance.GroupMagnitudeImportance(p=int(pruner[-1]))
    if pruner == "tp-taylor":
        F.cross_entropy(model(ctx.calibration), ctx.labels).backward()
        return tp.importance.GroupTaylorImportance()
    # OBD: TP reads p.grad as the Hessian diagonal when it accumulated nothing itself (its own
    # accumulate_grad keeps only the last image's in 1.6.1): mean squared per-image gradient
    squares = {p: torch.zeros_like(p) for p in model.parameters()}
    for image, label in zip(ctx.calibration, ctx.labels):
        model.zero_grad()
        F.cross_entropy(model(image[None]), label[None]).backward()
        for p, square in squares.items():
            square += p.grad.square()
    for p, square in squares.items():
        p.grad = square / len(ctx.calibration)
    return tp.importance.GroupHessianImportance()


def tp_pruned(model: nn.Module, pruner: str, ctx: PruneContext, ratio: float) -> nn.Module:
    """A deep copy physically pruned by TP's BasePruner (its defaults: per-group ratio), head ignored."""
    pruned = copy.deepcopy(model)
    importance = tp_importance(pruner, pruned, ctx)
    tp.pruner.BasePruner(pruned, ctx.calibration[:1], importance=importance, pruning_ratio=ratio,
                         ignored_layers=[pruned.fc]).step()
    return pruned


@pytest.mark.parametrize(("network", "pruner", "images"), [
    *[("digits_cnn", pruner, 16) for pruner in TP_PRUNERS],
    *[("vgg16_bn_cifar", pruner, 4) for pruner in ("tp-l2", "tp-taylor", "tp-hessian")],
])
@pytest.mark.slow
def test_masked_network_computes_what_torch_pruning_physically_pruned_computes(network, pruner, images):
    model = generic_network(network)
    ctx = random_context(model, images)
    ratio = 0.4
    masked = copy.deepcopy(model)
    with torch.enable_grad():
        plan = load_pruner(pruner).plan(masked, ctx)
    assert all(p.grad is None for p in masked.parameters())
    apply_masks(masked, plan(1 - ratio))
    propagate_compression(masked, ctx, structured=True)
    reference = tp_pruned(model, pruner, ctx, ratio)

    # compared on the S images: a unit dead on every S image is also removed by prunebench's
    # propagation (by design; deep VGG layers have such units at init), which changes nothing on S
    with torch.no_grad():
        parent, ours, theirs = model(ctx.calibration), masked(ctx.calibration), reference(ctx.calibration)
    assert sum(p.numel() for p in reference.parameters()) < 0.8 * sum(p.numel() for p in model.parameters())
    # float32 summation order only (observed <= 7.2e-7); pruning itself moves the outputs far more
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (ours - parent).abs().max() > 1e-2 * parent.abs().max()


@pytest.mark.parametrize("pruner", ["tp-l1", "tp-hessian"])
def test_option_a_resnet_is_refused_in_one_line(pruner):
    model = generic_network("resnet20_cifar_a")
    ctx = random_context(model, 2)
    with pytest.raises(PluginError, match="Torch-Pruning cannot prune this model") as refused:
        prune_to_ratio(model, load_pruner(pruner), 0.5, count_nonzero(model), ctx)
    assert "\n" not in str(refused.value) and "zero-padding" in str(refused.value)


def test_taylor_batches_option_uses_only_the_first_batches():
    model = generic_network("digits_cnn")
    ctx = random_context(model, 16, batch_size=4)
    first_batch = PruneContext(calibration=ctx.calibration[:4], labels=ctx.labels[:4], seed=0,
                               last_layer=ctx.last_layer, batch_size=4)
    with torch.enable_grad():
        limited = load_pruner("tp-taylor:batches=1").plan(model, ctx)(0.5)
        on_first = load_pruner("tp-taylor").plan(model, first_batch)(0.5)
        on_all = load_pruner("tp-taylor").plan(model, ctx)(0.5)
    assert all(torch.equal(limited[name], on_first[name]) for name in limited)
    assert any(not torch.equal(limited[name], on_all[name]) for name in limited)


@pytest.mark.slow
def test_bench_run_hits_the_targets_within_one_point(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["run", "--pruner", "tp-l1,tp-taylor", "--suite", "noise", "--corruptions", "gaussian_noise",
                 "--severities", "1", "--ratios", "0.3,0.5", "--epochs", "1", "--retrain-epochs", "1",
                 "--calibration-size", "16", "--out", str(out), "--quiet"]) == 0
    board = capsys.readouterr().out
    (path,) = out.glob("*.json")
    networks = json.loads(path.read_text())["networks"]
    steps = [(n["pruner"], n["target_ratio"], n["prune_ratio"]) for n in networks if n["pruner"] != "parent"]
    assert [(name, target) for name, target, _ in steps] == [
        ("tp-l1", 0.3), ("tp-l1", 0.5), ("tp-taylor", 0.3), ("tp-taylor", 0.5)]
    assert all(abs(measured - target) < 0.01 for _, target, measured in steps), steps
    assert "tp-l1" in board and "tp-taylor" in board


def test_missing_torch_pruning_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # makes `import torch_pruning` fail
    model = generic_network("digits_cnn")
    with pytest.raises(PluginError, match=r"pip install 'prunebench\[torch-pruning\]'"):
        prune_to_ratio(model, load_pruner("tp-l2"), 0.5, count_nonzero(model), random_context(model, 2))


def test_the_torch_pruning_version_is_part_of_the_identity_and_the_step_key(monkeypatch):
    from importlib.metadata import version

    from bench.core import registry
    from bench.data.recipes import DIGITS_TRAIN
    from bench.pipeline.specs import pruner_identity, step_spec
    from bench.results.schema import PrunerIdentity, RunConfig

    identity = pruner_identity("tp-l1")
    assert identity["requires"] == {"torch-pruning": version("torch-pruning")}
    assert "requires" not in pruner_identity("wt")  # no requirement: identity and keys as before
    PrunerIdentity.model_validate(identity)
    config = RunConfig(dataset="digits", model="digits_cnn", pruners=("tp-l1",), target_ratios=(0.5,),
                       train=DIGITS_TRAIN, retrain=DIGITS_TRAIN, seed=0)
    before = step_spec(config, "tp-l1", 1, "parent")
    monkeypatch.setattr(registry, "version", lambda name: "9.9.9" if name == "torch-pruning" else version(name))
    after = step_spec(config, "tp-l1", 1, "parent")
    assert before["pruner"]["requires"] != after["pruner"]["requires"] == {"torch-pruning": "9.9.9"}
