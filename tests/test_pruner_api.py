"""The pruner contract the size search enforces: options and labels, what plan may do, mask rules,
the empty S set of data-free pruners, the reconstruct hook, metadata outside the cache keys."""

import copy

import pytest
import torch
from pydantic import Field
from torch import nn

from bench.cli import main
from bench.core.registry import PluginError
from bench.models import create_model
from bench.pipeline.config import default_config
from bench.pipeline.specs import pruner_identity, spec_key, step_spec
from bench.pruning import (
    MaskPlan,
    Masks,
    PruneContext,
    Pruner,
    PrunerOptions,
    canonical_pruner_label,
    compressible_layers,
    count_nonzero,
    global_topk,
    last_layer_name,
    load_pruner,
    parse_pruner_label,
    prune_to_ratio,
    split_pruner_labels,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_cnn() -> nn.Module:
    """An untrained digits_cnn with BN statistics (the contract checks need no trained weights)."""
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_classes=10)
    with torch.no_grad():
        model.train()(torch.randn(16, 3, 32, 32))
    return model.eval()


def context(model: nn.Module, images: int = 8) -> PruneContext:
    generator = torch.Generator().manual_seed(1)
    return PruneContext(calibration=torch.randn(images, 3, 32, 32, generator=generator),
                        labels=torch.randint(0, 10, (images,), generator=generator), seed=0,
                        last_layer=last_layer_name(model))


def magnitude_plan(model: nn.Module) -> MaskPlan:
    scores = {name: layer.weight.detach().abs() for name, layer in compressible_layers(model).items()}
    return lambda keep: global_topk(scores, keep)


class Magnitude(Pruner):
    name = "magnitude"

    class Options(PrunerOptions):
        power: float = Field(default=1.0, gt=0)
        mode: str = "global"
        verbose: bool = False

    options: Options

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        return magnitude_plan(model)


# ---- labels and options ----------------------------------------------------------------------------

def test_pruner_lists_split_into_labels_the_old_comma_lists_unchanged():
    assert split_pruner_labels("wt,sipp") == ("wt", "sipp")
    assert split_pruner_labels("pfp:failure_probability=1e-5,wt") == ("pfp:failure_probability=1e-5", "wt")
    assert split_pruner_labels("x:a=1, b=2 ,wt,y,c=3") == ("x:a=1,b=2", "wt", "y:c=3")
    assert parse_pruner_label("x:a=1,b=p=q") == ("x", {"a": "1", "b": "p=q"})
    for bad, message in [("a=1,wt", "comes before any pruner name")]:
        with pytest.raises(ValueError, match=message):
            split_pruner_labels(bad)
    for bad, message in [("x:a", "bad option 'a'"), ("x:a=1,a=2", "given twice"), (":a=1", "no pruner name")]:
        with pytest.raises(ValueError, match=message):
            parse_pruner_label(bad)


def test_labels_are_canonical_sorted_non_default_options():
    assert Magnitude().label == "magnitude"
    assert Magnitude(power="1.0", verbose="false").label == "magnitude"  # strings coerced; defaults left out
    pruner = Magnitude(verbose="true", power="2")
    assert pruner.options == Magnitude.Options(power=2.0, verbose=True)
    assert pruner.changed_options() == {"power": 2.0, "verbose": True}
    assert pruner.label == "magnitude:power=2.0,verbose=true"
    assert Magnitude(**parse_pruner_label(pruner.label)[1]).options == pruner.options
    with pytest.raises(ValueError, match="cannot be written as a label"):
        _ = Magnitude(mode="a,b").label


def test_bad_options_name_the_pruner_and_its_valid_options():
    valid = "valid options: mode: str = 'global', power: float = 1.0, verbose: bool = False"
    with pytest.raises(ValueError) as unknown:
        Magnitude(powr=2)
    assert str(unknown.value) == f"pruner 'magnitude': unknown option 'powr'; {valid}"
    with pytest.raises(ValueError) as bad:
        Magnitude(power="-1")
    assert str(bad.value) == f"pruner 'magnitude': option power='-1': Input should be greater than 0; {valid}"


def test_every_option_needs_a_default():
    with pytest.raises(TypeError, match="option.s. size need a default"):
        class Required(Pruner):
            name = "required"

            class Options(PrunerOptions):
                size: int

            def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
                return magnitude_plan(model)


@pytest.mark.parametrize("argument, message", [
    ("wt,pfp:delta=1", "pruner 'pfp': unknown option 'delta'; valid options: failure_probability: float | None = None"),
    ("pfp:failure_probability=2", "pruner 'pfp': option failure_probability='2': Input should be less than 1; "
                                  "valid options: failure_probability: float | None = None"),
    ("wt:x=1", "pruner 'wt': unknown option 'x'; it takes no options"),
])
def test_bench_run_with_bad_options_is_a_one_line_error(argument, message, tmp_path, capsys):
    assert main(["run", "--pruner", argument, "--out", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err.strip() == f"bench run: error: {message}"
    assert not (tmp_path / "results").exists()  # nothing trained


def test_configs_hold_canonical_labels_so_default_options_keep_the_config_hash():
    plain = default_config(pruners=("wt", "pfp"))
    spelled = default_config(pruners=("wt", "pfp:"))
    assert spelled.pruners == ("wt", "pfp") and spelled.config_hash() == plain.config_hash()
    changed = default_config(pruners=("pfp:failure_probability=1e-5",))
    assert changed.pruners == ("pfp:failure_probability=1e-05",)
    assert canonical_pruner_label("pfp:failure_probability=0.00001") == "pfp:failure_probability=1e-05"


def test_a_hand_built_config_must_hold_canonical_labels(tmp_path):
    from bench.pipeline.runner import run

    config = default_config(pruners=("pfp",)).model_copy(update={"pruners": ("pfp:failure_probability=0.00001",)})
    with pytest.raises(ValueError, match="write it as 'pfp:failure_probability=1e-05'"):
        run(config, tmp_path, progress=False)


def test_options_are_keyed_and_recorded_metadata_is_not():
    config = default_config(pruners=("pfp",), target_ratios=(0.5,))
    plain, changed = pruner_identity("pfp"), pruner_identity("pfp:failure_probability=1e-5")
    assert plain["options"] == {} and changed["options"] == {"failure_probability": 1e-5}
    assert changed["paper"] == "Liebenwein et al. 2020, Provable Filter Pruning for Efficient Neural Networks"

    def key(identity):
        return spec_key(step_spec(config, "pfp", 1, "parent-key", identity))

    assert key(changed) != key(plain)
    assert key({**plain, "display_name": "another name", "paper": None, "code_url": None}) == key(plain)
    # what a result file written before metadata existed records: the same key
    assert key({k: plain[k] for k in ("name", "distribution", "version", "source_sha256", "options")}) == key(plain)


def test_builtin_pruners_declare_their_metadata():
    for name in ("wt", "ft", "sipp", "pfp", "random"):
        meta = load_pruner(name).metadata()
        assert meta["display_name"], name
        if name != "random":
            assert meta["paper"] and meta["code_url"] == "https://github.com/lucaslie/torchprune", name


def test_pfps_failure_probability_option_changes_its_masks(small_cnn):
    ctx = context(small_cnn, images=16)
    plans = {label: load_pruner(label).plan(small_cnn, ctx) for label in ("pfp", "pfp:failure_probability=0.5")}

    def inputs_kept(label, keep):
        return [int(m.reshape(*m.shape[:2], -1).any(2).any(0).sum()) for m in plans[label](keep).values()]

    grid = [0.5, 0.6, 0.7, 0.8, 0.9]
    assert any(inputs_kept("pfp", k) != inputs_kept("pfp:failure_probability=0.5", k) for k in grid)


# ---- what plan may do ---------------------------------------------------------------------------------

class Recording(Magnitude):
    """Records what the contract promises each call of pruner code."""

    name = "recording"
    calls: list[tuple[str, bool, bool, int, tuple[int, ...]]]

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        self.calls = []
        self.record("plan", model, ctx)
        inner = magnitude_plan(model)

        def masks(keep: float) -> Masks:
            self.record("call", model, ctx)
            return inner(keep)

        return masks

    def reconstruct(self, model: nn.Module, masks: Masks, ctx: PruneContext) -> None:
        self.record("reconstruct", model, ctx)

    def record(self, what: str, model: nn.Module, ctx: PruneContext) -> None:
        assert ctx.device == next(model.parameters()).device
        self.calls.append((what, model.training, torch.is_grad_enabled(), count_nonzero(model),
                           tuple(ctx.calibration.shape)))


class DataRecording(Recording):
    name = "datarecording"
    uses_data = True


@pytest.mark.parametrize("pruner_class", [Recording, DataRecording])
def test_plan_runs_in_eval_mode_with_grad_on_the_unmasked_model(pruner_class, small_cnn):
    parent_nonzero = count_nonzero(small_cnn)
    pruner = pruner_class()
    with torch.no_grad():  # the harness enables gradients for pruner code whatever the caller does
        outcome = prune_to_ratio(small_cnn.train(), pruner, 0.6, parent_nonzero, context(small_cnn))
    assert small_cnn.training  # the caller's mode is restored
    kinds = [call[0] for call in pruner.calls]
    assert kinds[0] == "plan" and kinds[-1] == "reconstruct" and kinds.count("reconstruct") == 1
    assert all(not training and grad for _, training, grad, _, _ in pruner.calls)
    assert all(nonzero == parent_nonzero for kind, _, _, nonzero, _ in pruner.calls if kind != "reconstruct")
    assert pruner.calls[-1][3] == outcome.nonzero_params  # reconstruct sees the masked model
    # a data-free pruner sees the S set with 0 images, its other dimensions kept
    rows = 8 if pruner.uses_data else 0
    assert {shape for *_, shape in pruner.calls} == {(rows, 3, 32, 32)}


class ChangesWeights(Magnitude):
    name = "changesweights"

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        with torch.no_grad():
            model.fc.weight[0, 0] += 1
        return magnitude_plan(model)


class ChangesBuffers(Magnitude):
    name = "changesbuffers"

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        inner = magnitude_plan(model)

        def masks(keep: float) -> Masks:
            model.train()(ctx.calibration[:2])  # updates BN running statistics
            return inner(keep)

        return masks


class NotMonotone(Magnitude):
    name = "notmonotone"

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        inner = magnitude_plan(model)
        return lambda keep: inner(1.0 - keep if keep < 0.4 else keep)


class BadParameterMask(Magnitude):
    name = "badparametermask"

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        return lambda keep: {"fc.bias": torch.ones(3, dtype=torch.bool)}


@pytest.mark.parametrize("pruner_class, message", [
    (ChangesWeights, "pruner 'changesweights': plan(model, ctx) changed the model (fc.weight); a plan must leave "
                     "the model as it found it"),
    (ChangesBuffers, "pruner 'changesbuffers': its plan(0.5) changed the model (features.0.1.num_batches_tracked"),
    (NotMonotone, "pruner 'notmonotone': its plan is not monotone: plan(0.5) prunes"),
    (BadParameterMask, "pruner 'badparametermask': mask of parameter 'fc.bias' has shape (3,), its parameter (10,)"),
])
def test_contract_violations_are_plugin_errors_naming_the_pruner(pruner_class, message, small_cnn):
    with pytest.raises(PluginError) as caught:
        prune_to_ratio(small_cnn, pruner_class(), 0.6, count_nonzero(small_cnn), context(small_cnn))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# ---- masks on parameters, reconstruct --------------------------------------------------------------

class SlimsChannelZero(Magnitude):
    """Magnitude masks plus the BN gamma and beta of the first block's channel 0 (channel slimming)."""

    name = "slims"

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        inner = magnitude_plan(model)
        channel = torch.ones(model.features[0][1].weight.shape, dtype=torch.bool)
        channel[0] = False
        return lambda keep: {**inner(keep), "features.0.1.weight": channel, "features.0.1.bias": channel}


def test_masks_may_name_parameters_and_propagation_removes_what_they_cut_off(small_cnn):
    parent_nonzero = count_nonzero(small_cnn)
    outcome = prune_to_ratio(small_cnn, SlimsChannelZero(), 0.5, parent_nonzero, context(small_cnn))
    assert abs(outcome.prune_ratio - 0.5) < 0.01
    block, consumer = small_cnn.features[0], small_cnn.features[1][0]
    assert block[1].weight[0] == 0 and block[1].bias[0] == 0
    assert not block[0].weight[0].any(), "the filter feeding the removed channel survived"
    assert not consumer.weight[:, 0].any(), "the next layer still reads the removed channel"
    assert block[1].weight[1:].all()  # other channels' BN untouched


class RegrowingReconstruct(Magnitude):
    """A reconstruct that writes into every weight entry, pruned ones included."""

    name = "regrows"

    def reconstruct(self, model: nn.Module, masks: Masks, ctx: PruneContext) -> None:
        with torch.no_grad():
            for layer in compressible_layers(model).values():
                layer.weight.add_(1e-3)


def test_reconstruct_updates_kept_weights_and_nothing_pruned_regrows(small_cnn):
    parent_nonzero = count_nonzero(small_cnn)
    plain = copy.deepcopy(small_cnn)
    prune_to_ratio(plain, Magnitude(), 0.7, parent_nonzero, context(plain))
    outcome = prune_to_ratio(small_cnn, RegrowingReconstruct(), 0.7, parent_nonzero, context(small_cnn))
    assert outcome.nonzero_params == count_nonzero(small_cnn) == count_nonzero(plain)
    assert abs(outcome.prune_ratio - 0.7) < 0.01
    plain_layers = compressible_layers(plain)
    for name, layer in compressible_layers(small_cnn).items():
        kept = plain_layers[name].weight != 0
        assert torch.equal(layer.weight != 0, kept), f"{name}: a pruned entry regrew"
        assert torch.allclose(layer.weight[kept], plain_layers[name].weight[kept] + 1e-3)


@pytest.mark.parametrize("label", ["wt", "pfp:failure_probability=1e-05"])
def test_a_result_files_identity_keys_the_same_steps_as_the_run(label):
    """bench verify --reproduce, analyses and compress rebuild step keys from the stored PrunerIdentity."""
    from bench.pipeline.specs import keyed_identity, pruner_identity
    from bench.results.schema import PrunerIdentity

    live = pruner_identity(label)
    stored = PrunerIdentity.model_validate_json(PrunerIdentity(**live).model_dump_json()).model_dump(mode="json")
    assert keyed_identity(stored) == keyed_identity(live)
