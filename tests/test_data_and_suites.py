import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from bench.data import load_digits, stratified_split
from bench.data.normalization import channel_stats
from bench.data.suite import Selection
from bench.pipeline.runner import load_suite


def test_digits_split_is_stratified_seeded_and_disjoint():
    a, b = load_digits(0), load_digits(0)
    assert a.checksum == b.checksum
    assert load_digits(1).checksum != a.checksum
    assert a.train.images.shape[1:] == (3, 32, 32) and a.train.images.dtype == torch.uint8
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 50 and counts.max() <= 56  # ~30 % of each class
    import numpy as np

    parts = stratified_split(np.repeat(np.arange(3), 10), (0.3, 0.1), seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(30))
    assert [len(p) for p in parts] == [9, 3, 18]


def test_normalisation_uses_train_statistics():
    data = load_digits(0)
    x = data.normalize(data.train.images)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2


def test_channel_statistics_are_exact_at_every_thread_count():
    # 3.1 M pixels a channel: a float32 mean of them is off by an ulp here, and its rounding follows the thread count
    images = torch.randint(0, 256, (4000, 2, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    pixels = images.numpy().astype(np.int64).transpose(1, 0, 2, 3).reshape(2, -1)
    count = pixels.shape[1]
    exact_means = [float(Fraction(int(row.sum()), 255 * count)) for row in pixels]
    exact_variances = [Fraction(count * int((row * row).sum()) - int(row.sum()) ** 2, 255**2 * count * (count - 1))
                       for row in pixels]
    before = torch.get_num_threads()
    try:
        by_threads = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            by_threads.append(channel_stats(images))
    finally:
        torch.set_num_threads(before)
    assert by_threads[0] == by_threads[1]
    means, stds = by_threads[0]
    assert list(means) == exact_means
    assert list(stds) == [math.sqrt(float(variance)) for variance in exact_variances]
    assert channel_stats(torch.zeros(3, 1, 2, 2, dtype=torch.uint8)) == ((0.0,), (1e-3,))
    with pytest.raises(ValueError, match="uint8"):
        channel_stats(images.float())


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # 165 small corruption calls: a second thread only spins on a busy machine
def test_corruption_suites_are_deterministic_and_graded_in_strength():
    data = load_digits(0)
    suite = load_suite("digits-c")
    first = suite.distributions(data, seed=0)
    again = suite.distributions(data, seed=0)
    assert len(first) == 55 and len({d.name for d in first}) == 55
    assert [d.images.checksum for d in first] == [d.images.checksum for d in again]
    other = suite.distributions(data, seed=1, selection=Selection(corruptions=("gaussian_noise",)))
    noisy = [d for d in first if d.corruption == "gaussian_noise"]
    assert noisy[0].images.checksum != next(d for d in other if d.name == noisy[0].name).images.checksum
    clean = data.test.images.float()
    change = [float((d.images.images.float() - clean).abs().mean()) for d in noisy]
    assert change == sorted(change) and change[0] > 0


def test_digits_c_refuses_other_datasets():
    import pytest

    with pytest.raises(ValueError, match="defined for digits"):
        load_suite("digits-c").check_dataset("cifar10")
