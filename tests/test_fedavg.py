"""The training loop behind `securefl run`: dropouts by stage, DP weighting, the noise-over-signal warning."""

from __future__ import annotations

import logging

import pytest

from securefl import dp
from securefl.datasets import federated_digits
from securefl.errors import InputError
from securefl.fedavg import check_noise, train
from securefl.plaintext import Plaintext


class Recording(Plaintext):
    """Plaintext that remembers the weights and dropouts each round passed to it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def aggregate(self, updates, weights=None, dropped=None):
        self.calls.append((list(weights), dict(dropped)))
        return super().aggregate(updates, weights, dropped)


@pytest.fixture(scope="module")
def data():
    return federated_digits(6, 0.5, 0)


def test_dropped_clients_carry_their_stage_and_sample_weights(data):
    agg = Recording(seed=0)
    _, hist = train(agg, data, rounds=3, local_epochs=1, dropout=0.5, seed=1)
    sizes = [len(y) for _, y in data.clients]
    assert all(weights == sizes for weights, _ in agg.calls)
    assert any(dropped for _, dropped in agg.calls)
    for (_, dropped), m in zip(agg.calls, hist, strict=True):
        assert set(dropped.values()) <= {"upload"} and m.dropped == dropped  # every client selected: ids match
        assert m.participants == 6 and m.survivors == 6 - len(dropped)


def test_with_dp_every_client_weighs_the_same(data):
    agg = Recording(seed=0, dp=dp.GaussianMechanism(1.0, 1.0))
    train(agg, data, rounds=1, local_epochs=1)
    assert agg.calls[0][0] == [1] * 6


def test_unknown_dropout_stage_is_an_input_error(data):
    with pytest.raises(InputError, match="stages: upload"):
        train(Plaintext(), data, rounds=1, dropout=0.5, dropout_stage="masked_input")


def test_noise_warning_only_when_noise_exceeds_the_signal(caplog):
    agg = Plaintext(dp=dp.GaussianMechanism(1.0, 1.0))
    with caplog.at_level(logging.WARNING, logger="securefl"):
        assert check_noise(agg, 10_000, 10) == pytest.approx(10.0)  # z sqrt(d) / clients
    assert [r.name for r in caplog.records] == ["securefl.fedavg"]
    assert "at least z*sqrt(d) = 100 clients per round" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="securefl"):
        assert check_noise(agg, 10_000, 400) == pytest.approx(0.25)
        assert check_noise(Plaintext(), 10_000, 1) is None
    assert caplog.records == []
