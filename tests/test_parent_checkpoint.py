"""`bench run --parent-checkpoint`: a user's trained parent instead of a trained one."""

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bench.cli import main
from bench.data import load_dataset
from bench.models import create_model
from bench.pipeline.config import default_config
from bench.pipeline.jobs import new_model
from bench.pipeline.runner import run
from bench.pipeline.specs import parent_spec, spec_key
from bench.pipeline.training import evaluate, train
from bench.results import load_result
from bench.results.checkpoints import NetworkFileError, save_state

SMALL = {"dataset": "digits", "pruners": ("wt",), "suites": (), "target_ratios": (0.5,), "retrain_epochs": 1,
         "calibration_size": 16}
CLI_SMALL = ["--dataset", "digits", "--pruner", "wt", "--suite", "noise", "--ratios", "0.5", "--retrain-epochs", "1",
             "--calibration-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    """A digits_cnn trained briefly the way bench trains parents (channels_last)."""
    config = default_config(**SMALL, epochs=2)
    data = load_dataset("digits", 0)
    model = new_model(config, data, initial=True)
    train(model, data, config.train, seed=0, progress=False)
    return model


def write_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if path.name.endswith(".pt"):
        torch.save(state, path)
    elif path.name.endswith(".sparse.safetensors"):
        save_state(state, path)  # prunebench's own network format
    else:
        save_file(state, str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["parent.pt", "parent.safetensors", "parent.sparse.safetensors"])
def test_the_checkpoint_is_the_parent(name, trained, tmp_path):
    checkpoint = write_checkpoint(trained, tmp_path / name)
    config = default_config(**SMALL, parent_checkpoint=checkpoint)
    assert config.parent_checkpoint_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert config.train.epochs == 0  # used as is, not fine-tuned

    path = run(config, tmp_path / "out", progress=False, parent_checkpoint=checkpoint)
    result = load_result(path)

    data = load_dataset("digits", 0)
    direct = new_model(config, data)
    direct.load_state_dict(trained.state_dict())
    expected = evaluate(direct.eval(), data, data.test)
    assert result.parent.accuracy["digits/clean"] == expected["accuracy"] > 0.5
    assert result.parent.hits["digits/clean"] == expected["hits"]
    assert result.config.parent_checkpoint_sha256 == config.parent_checkpoint_sha256
    assert str(tmp_path) not in path.read_text(), "a machine-specific path was recorded"


def test_a_checkpoint_of_another_architecture_fails_with_one_line_naming_the_file(tmp_path, capsys):
    checkpoint = write_checkpoint(create_model("resnet20_cifar", num_classes=10), tmp_path / "resnet.pt")
    assert main(["run", *CLI_SMALL, "--parent-checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith("bench run: error: ")
    assert str(checkpoint) in error and "does not fit the model" in error
    assert not list((tmp_path / "out").glob("*.json"))


def test_a_file_that_is_no_state_dict_fails_with_one_line(tmp_path, capsys):
    checkpoint = tmp_path / "notes.pt"
    checkpoint.write_text("not a checkpoint")
    assert main(["plan", *CLI_SMALL, "--parent-checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(checkpoint) in error and "not a state dict file" in error


@pytest.mark.slow
def test_the_checkpoint_is_part_of_the_parent_key_and_the_config_hash(trained, tmp_path):
    checkpoint = write_checkpoint(trained, tmp_path / "parent.pt")
    plain = default_config(**SMALL, epochs=0)
    with_checkpoint = default_config(**SMALL, parent_checkpoint=checkpoint)
    checksum = load_dataset("digits", 0).checksum
    assert spec_key(parent_spec(with_checkpoint, checksum)) != spec_key(parent_spec(plain, checksum))
    assert with_checkpoint.config_hash() != plain.config_hash()
    assert with_checkpoint.protocol_hash() != plain.protocol_hash()
    assert "checkpoint" not in parent_spec(plain, checksum)  # keys of runs without one are unchanged


@pytest.mark.slow
def test_a_config_of_another_checkpoint_is_refused(trained, tmp_path):
    first = write_checkpoint(trained, tmp_path / "first.pt")
    other = write_checkpoint(trained, tmp_path / "other.safetensors")
    config = default_config(**SMALL, parent_checkpoint=first)
    with pytest.raises(ValueError, match="differs from the config's parent_checkpoint_sha256"):
        run(config, tmp_path / "out", progress=False, parent_checkpoint=other)


@pytest.mark.slow
def test_checkpoint_and_pretrained_exclude_each_other(trained, tmp_path):
    checkpoint = write_checkpoint(trained, tmp_path / "parent.pt")
    with pytest.raises(ValueError, match="exclude each other"):
        default_config(**SMALL, parent_checkpoint=checkpoint, pretrained=True)


def test_network_file_errors_name_the_file(tmp_path):
    from bench.results.checkpoints import decode_checkpoint

    with pytest.raises(NetworkFileError, match="weird.bin"):
        decode_checkpoint(b"\x00" * 32, str(tmp_path / "weird.bin"))


def test_the_control_of_a_checkpoint_parent_is_trained_from_scratch_not_reloaded():
    from bench.data import dataset_spec
    from bench.pipeline.config import default_config
    from bench.pipeline.jobs import control_config
    from bench.pipeline.specs import CONTROL_SEED_OFFSET

    own = default_config(seed=3, epochs=5)
    assert control_config(own).train == own.train and control_config(own).seed == 3 + CONTROL_SEED_OFFSET
    brought = own.model_copy(update={"parent_checkpoint_sha256": "a" * 64,
                                     "train": own.train.model_copy(update={"epochs": 0})})
    control = control_config(brought)
    assert control.parent_checkpoint_sha256 is None  # not the user's parent once more
    assert control.train == dataset_spec("digits").train and control.train.epochs > 0
    assert control.seed == 3 + CONTROL_SEED_OFFSET
