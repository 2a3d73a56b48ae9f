"""Sparse network files: exact round trip, size proportional to the kept entries, never unpickled."""

import pickle

import pytest
import torch

from bench.models import create_model
from bench.pruning import count_nonzero
from bench.results.checkpoints import (
    NetworkFileError,
    decode_checkpoint,
    fit_state,
    load_state,
    read_state,
    save_state,
    shape_signature,
)


def pruned(model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """Zero the smallest-magnitude `ratio` of every weight tensor (and a BN bias entry)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                threshold = param.abs().flatten().kthvalue(max(1, int(ratio * param.numel()))).values
                param[param.abs() <= threshold] = 0.0
            elif name.endswith("bias"):
                param[0] = 0.0
    return model


@pytest.mark.slow
def test_round_trip_is_exact_for_every_tensor_and_dtype(digits_cnn, tmp_path):
    model = pruned(digits_cnn, 0.7)
    state = model.state_dict()
    saved = save_state(state, tmp_path / "net.safetensors")
    loaded = read_state(tmp_path / "net.safetensors", saved.sha256)
    assert loaded.keys() == state.keys()
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    assert any(t.dtype == torch.int64 for t in loaded.values())  # BN's num_batches_tracked, stored dense
    assert saved.shape_signature == shape_signature(state)
    assert saved.nonzero == sum(int(torch.count_nonzero(t)) for t in state.values() if t.is_floating_point())


    fresh = create_model("digits_cnn", num_classes=10)
    load_state(fresh, tmp_path / "net.safetensors", saved.sha256)
    assert count_nonzero(fresh) == count_nonzero(model)


def test_negative_zeros_survive_bitwise(tmp_path):
    """A cascade resumed from a saved step must continue exactly: -0.0 is not turned into +0.0."""
    weight = torch.tensor([[0.0, -0.0, 1.5], [-2.0, 0.0, -0.0]])
    saved = save_state({"w": weight}, tmp_path / "net.safetensors")
    loaded = read_state(tmp_path / "net.safetensors")["w"]
    assert torch.equal(loaded.view(torch.int32), weight.view(torch.int32))
    assert saved.nonzero == 4  # two values and two negative zeros stored


def test_a_90_percent_pruned_network_costs_about_a_tenth_of_dense(tmp_path):
    torch.manual_seed(0)
    model = pruned(create_model("resnet20_cifar", num_classes=10), 0.9)
    dense = tmp_path / "dense.pt"
    torch.save(model.state_dict(), dense)
    save_state(model.state_dict(), tmp_path / "sparse.safetensors")
    ratio = (tmp_path / "sparse.safetensors").stat().st_size / dense.stat().st_size
    assert 0.1 < ratio < 0.18  # 10 % of the values + 1/32 for the mask + dense BN statistics + header


@pytest.mark.slow
def test_loading_checks_the_sha256_before_parsing(digits_cnn, tmp_path):
    path = tmp_path / "net.safetensors"
    saved = save_state(digits_cnn.state_dict(), path)
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0x01  # one flipped bit in the last value
    path.write_bytes(bytes(payload))
    with pytest.raises(NetworkFileError, match="sha256 differs"):
        read_state(path, saved.sha256)


def test_a_pickle_is_rejected_without_being_unpickled(tmp_path):
    class Bomb:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Bomb()))
    with pytest.raises(NetworkFileError, match="not a safetensors file"):
        read_state(path)


def test_a_network_of_another_architecture_is_named(digits_cnn, tmp_path):
    path = tmp_path / "net.safetensors"
    save_state(digits_cnn.state_dict(), path)
    other = create_model("digits_cnn", num_classes=7)
    with pytest.raises(NetworkFileError, match=r"does not fit the model.*fc\.bias"):
        load_state(other, path)


def test_the_two_most_common_saving_mistakes_get_their_fix_in_one_line(tmp_path):
    """torch.save(model) (a pickle: refused unread, no terminal codes, the fix named) and a state dict
    saved while torch.nn.utils.prune's reparametrisation is still on (prune.remove named)."""
    import torch.nn.utils.prune as torch_prune

    model = create_model("digits_cnn", num_classes=10)
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(NetworkFileError) as whole:
        decode_checkpoint((tmp_path / "whole.pt").read_bytes(), "whole.pt")  # as `bench eval` reads a network
    message = str(whole.value)
    assert "torch.save(model.state_dict(), path)" in message and "\x1b" not in message and "\n" not in message

    torch_prune.l1_unstructured(model.fc, "weight", amount=0.5)
    torch.save(model.state_dict(), tmp_path / "masked.pt")
    masked = decode_checkpoint((tmp_path / "masked.pt").read_bytes(), "masked.pt")
    with pytest.raises(NetworkFileError, match=r"torch\.nn\.utils\.prune\.remove\(module, 'weight'\)"):
        fit_state(create_model("digits_cnn", num_classes=10), masked, tmp_path / "masked.pt")
    torch_prune.remove(model.fc, "weight")
    torch.save(model.state_dict(), tmp_path / "removed.pt")
    removed = decode_checkpoint((tmp_path / "removed.pt").read_bytes(), "removed.pt")
    loaded = fit_state(create_model("digits_cnn", num_classes=10), removed, tmp_path / "removed.pt")
    assert torch.equal(loaded.fc.weight, model.fc.weight)
