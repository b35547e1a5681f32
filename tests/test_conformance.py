"""The conformance suite: every registered scheme (securefl.schemes.names()) against the one contract of DESIGN.md.

Exactness against the float64 reference (state_dicts with BatchNorm's integer counter, every update structure,
weights), dropouts at every stage of the scheme, bad inputs named by client and tensor, the report's fields, the
scale of each DP mechanism the scheme takes, and parties that live only in their saved state. A scheme registered
in securefl.schemes is tested here without any edit; its own test file keeps only what is specific to it
(attacks, decoders, parameters).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from securefl import dp, keys, schemes
from securefl.codec import flatten_all
from securefl.errors import ConfigError, DropoutError, InputError, ProtocolError, StructureError
from securefl.keys import Directory
from securefl.protocol import Party, run_round
from securefl.session import new_session
from securefl.simulation import Simulation
from securefl.wire import PartyId, Role
from tests.conftest import STRUCTURES, state_updates
from tests.reference import assert_close, reference

NAMES = schemes.names()
N = 6
WEIGHTS = {"unweighted": None, "integers": [1, 2, 3, 4, 5, 6], "fractions_and_zero": [0.5, 0.0, 3.25, 1.0, 7.0, 2.0]}
MECHANISMS = {"distributed": dp.DistributedGaussian, "central": dp.GaussianMechanism}
STAGES = [(name, stage) for name in NAMES for stage in schemes.scheme_class(name).stages]
DP_CASES = [(name, kind) for name in NAMES for kind in schemes.dp_kinds(name)]

_shared: dict[str, object] = {}


def shared(name: str):
    """One long-lived aggregator per scheme for the rounds that succeed: each call is the next round of its session
    (as in a deployment), and HE keys are made once per configuration."""
    if name not in _shared:
        _shared[name] = schemes.make(name, seed=0)
    return _shared[name]


def tolerances(result, weights, included) -> tuple[float, float]:
    """(mean, sum) tolerances: the scheme's stated bound on the normalised weighted sum (CKKS: sum_error_bound),
    else the fixed-point rounding bound (< 1 unit of 2^-frac_bits per client and value)."""
    params = result.report.params
    err = params.get("sum_error_bound", len(included) * 2.0 ** -params["frac_bits"])
    w = [1.0] * (max(included) + 1) if weights is None else [float(x) for x in weights]
    wmax = max(w)
    wnorm = sum(w[i] for i in included) / wmax
    return (1 + params["clip"]) * err / (wnorm - err), err * wmax * (1 + 1e-9)


def check(result, updates, weights, included) -> None:
    """The result equals the float64 reference over `included`: floats within the stated bound, integers exact."""
    assert_close(result, updates, weights, included, clip=result.report.params["clip"],
                 tols=tolerances(result, weights, included))


def as_dict(update) -> dict[str, torch.Tensor]:
    """A tensor, list or tuple of tensors as a state_dict-like mapping (for the reference)."""
    if isinstance(update, torch.Tensor):
        return {"0": update}
    return {str(j): t for j, t in enumerate(update)}


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("weights", WEIGHTS.values(), ids=WEIGHTS.keys())
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_with_batchnorm_matches_the_reference(name, weights):
    ups = state_updates(N, seed=1)
    res = shared(name).aggregate(ups, weights=weights)
    check(res, ups, weights, range(N))
    assert res.mean["bn.num_batches_tracked"].dtype == torch.int64
    assert res.sum["bn.num_batches_tracked"].dtype == torch.int64


@pytest.mark.parametrize("structure", STRUCTURES, ids=["tensor", "list", "tuple_half_bfloat16", "list_double_int"])
@pytest.mark.parametrize("name", NAMES)
def test_every_structure_keeps_its_type_dtypes_and_shapes(name, structure):
    g = torch.Generator().manual_seed(0)
    ups = [structure(g) for _ in range(4)]
    res = shared(name).aggregate(ups)
    assert type(res.mean) is type(ups[0]) and type(res.sum) is type(ups[0])
    mean, total = reference([as_dict(u) for u in ups], None, range(4), clip=8.0)
    mean_tol, sum_tol = tolerances(res, None, range(4))
    first = as_dict(ups[0])
    for key, got_m in as_dict(res.mean).items():
        got_s = as_dict(res.sum)[key]
        assert got_m.shape == first[key].shape and got_m.dtype == first[key].dtype, key
        if got_m.dtype.is_floating_point:  # rounded to the update's dtype: up to one ulp of it on top
            eps = torch.finfo(got_m.dtype).eps
            assert ((got_m.double() - mean[key]).abs() <= mean_tol + eps * mean[key].abs()).all(), key
            assert ((got_s.double() - total[key]).abs() <= sum_tol + eps * total[key].abs()).all(), key
        else:
            assert torch.equal(got_s.long(), total[key]) and torch.equal(got_m.long(), mean[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_values_beyond_the_clip_are_clipped_and_counted(name):
    res = schemes.make(name, clip=1.0, seed=0).aggregate([torch.tensor([0.5, 20.0, -30.0]),
                                                           torch.tensor([0.5, 0.0, 0.0])])
    assert res.report.clipped_values == 2
    assert torch.allclose(res.mean, torch.tensor([0.5, 0.5, -0.5]), atol=1e-4)


# ---------------------------------------------------------------- dropouts


@pytest.mark.parametrize("name,stage", STAGES)
def test_dropouts_at_every_stage_keep_the_sum_exact_over_the_survivors(name, stage):
    """Clients dropped up to the scheme's input stage are left out; those dropped after it keep their input in."""
    agg = schemes.make(name, seed=2)
    ups, weights, dropped = state_updates(N, seed=2), WEIGHTS["integers"], {1: stage, 4: stage}
    res = agg.aggregate(ups, weights=weights, dropped=dropped)
    after_input = agg.stages.index(stage) > agg.stages.index(agg.input_stage)
    assert res.report.survivors == (list(range(N)) if after_input else [0, 2, 3, 5])
    assert res.report.dropped == dropped
    assert ("client/1" in res.report.bytes_sent) == (stage != agg.stages[0])  # gone at once: never sends
    check(res, ups, weights, res.report.survivors)


@pytest.mark.parametrize("name", NAMES)
def test_a_list_of_dropped_clients_vanishes_at_the_input_stage(name):
    agg = shared(name)
    ups = state_updates(N, seed=3)
    res = agg.aggregate(ups, dropped=[0, 5])
    assert res.report.dropped == {0: agg.input_stage, 5: agg.input_stage} and res.report.survivors == [1, 2, 3, 4]
    check(res, ups, None, [1, 2, 3, 4])


@pytest.mark.parametrize("name", NAMES)
def test_too_many_dropouts_raise_dropout_error(name):
    with pytest.raises(DropoutError):
        schemes.make(name, seed=0).aggregate(state_updates(N), dropped=list(range(N)))
    with pytest.raises(DropoutError, match="weights sum to 0"):  # survivors, but none with a positive weight
        schemes.make(name, seed=0).aggregate(state_updates(N), weights=[1, 0, 0, 0, 0, 0], dropped=[0])


# ---------------------------------------------------------------- bad inputs


def _set(client: int, key: str, value) -> callable:
    def change(ups):
        ups[client][key] = value(ups[client][key])
    return change


def _poison(value: float):
    def poison(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.view(-1)[0] = value
        return t
    return poison


BAD_UPDATES = {
    "nan": (_set(3, "fc.weight", _poison(float("nan"))), InputError, r"client 3: tensor 'fc.weight' contains NaN"),
    "inf": (_set(3, "fc.weight", _poison(float("-inf"))), InputError, r"client 3: tensor 'fc.weight' contains NaN"),
    "shape": (_set(2, "fc.bias", lambda t: torch.zeros(4)), StructureError, r"client 2: tensor 'fc.bias' has shape"),
    "dtype": (_set(2, "fc.bias", lambda t: t.double()), StructureError, r"client 2: tensor 'fc.bias' has dtype"),
    "missing": (lambda ups: ups[4].pop("conv.bias"), StructureError, r"client 4: missing tensors \['conv.bias'\]"),
    "kind": (lambda ups: ups.__setitem__(5, list(ups[5].values())), StructureError, r"client 5: update is a"),
    "int_bound": (_set(1, "bn.num_batches_tracked", lambda t: t + 2**17), InputError,
                  r"client 1: integer tensor 'bn.num_batches_tracked' holds"),
}


@pytest.mark.parametrize("case", BAD_UPDATES)
@pytest.mark.parametrize("name", NAMES)
def test_bad_updates_raise_input_error_naming_client_and_tensor(name, case):
    change, error, match = BAD_UPDATES[case]
    ups = [dict(u) for u in state_updates(N)]
    change(ups)
    with pytest.raises(error, match=match):
        schemes.make(name, seed=0).aggregate(ups)


BAD_WEIGHTS = {
    "count": ([1, 2], "2 entries"),
    "negative": ([1, -1, 1, 1, 1, 1], "client 1"),
    "nan": ([1, float("nan"), 1, 1, 1, 1], "client 1"),
    "zero_sum": ([0] * 6, "sum to 0"),
    "string": ("abcdef", "sequence"),
    "not_numbers": ([1, "x", 1, 1, 1, 1], "numbers"),
}


@pytest.mark.parametrize("case", BAD_WEIGHTS)
@pytest.mark.parametrize("name", NAMES)
def test_bad_weights_raise_input_error(name, case):
    weights, match = BAD_WEIGHTS[case]
    with pytest.raises(InputError, match=match):
        schemes.make(name, seed=0).aggregate(state_updates(N), weights=weights)


@pytest.mark.parametrize("name", NAMES)
def test_bad_dropped_raise_input_error(name):
    agg = schemes.make(name, seed=0)
    with pytest.raises(InputError, match="unknown stage 'nowhere'"):
        agg.aggregate(state_updates(N), dropped={0: "nowhere"})
    with pytest.raises(InputError, match="index"):
        agg.aggregate(state_updates(N), dropped=[N])
    with pytest.raises(InputError, match="empty"):
        agg.aggregate([])


# ---------------------------------------------------------------- the report


@pytest.mark.parametrize("name", NAMES)
def test_report_fields(name):
    agg = schemes.make(name, seed=0)
    ups = state_updates(N, seed=5)
    agg.aggregate(ups)
    rep = agg.aggregate(ups, dropped=[N - 1]).report
    assert rep.scheme == type(agg).scheme and rep.clients == N
    assert rep.survivors == list(range(N - 1)) and rep.dropped == {N - 1: agg.input_stage}
    assert rep.clipped_values == 0 and rep.epsilon is None and rep.delta is None
    assert {"clip", "frac_bits", "weight_bound", "round"} <= set(rep.params) and rep.params["round"] == 2
    # bytes per party name; every message goes to or from the coordinator, and is counted at both ends
    parties = {PartyId.parse(p) for p in {*rep.bytes_sent, *rep.bytes_received}}
    helpers, keyholder = agg.roles()
    coordinator = {p for p in parties if p.role in (Role.SERVER, Role.LEADER)}
    assert len(coordinator) == 1
    coord = str(coordinator.pop())
    assert {str(p) for p in parties if p.role == Role.HELPER} == {f"helper/{j}" for j in range(1, helpers + 1)}
    assert (PartyId(Role.KEYHOLDER) in parties) == keyholder
    assert {f"client/{i}" for i in range(N - 1)} <= set(rep.bytes_sent)
    assert {f"client/{i}" for i in range(N)} <= set(rep.bytes_received)
    assert all(isinstance(v, int) and v > 0 for v in [*rep.bytes_sent.values(), *rep.bytes_received.values()])
    assert rep.bytes_received[coord] == sum(v for p, v in rep.bytes_sent.items() if p != coord)
    assert rep.bytes_sent[coord] == sum(v for p, v in rep.bytes_received.items() if p != coord)
    # seconds per phase and party kind; per party for every party that worked
    kinds = {p.kind for p in parties}
    assert {agg.input_stage, "decode"} <= set(rep.seconds)
    assert all(set(by_kind) <= kinds and min(by_kind.values()) >= 0 for by_kind in rep.seconds.values())
    assert {coord, *(f"client/{i}" for i in range(N - 1))} <= set(rep.party_seconds) <= {str(p) for p in parties}
    assert rep.kind_seconds("client") == pytest.approx(sum(v for p, v in rep.party_seconds.items()
                                                           if p.startswith("client/")))
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["scheme"] == rep.scheme and d["dropped"] == {str(N - 1): agg.input_stage}


# ---------------------------------------------------------------- what the class says of the scheme


@pytest.mark.parametrize("name", NAMES)
def test_the_class_describes_the_scheme(name):
    agg, cls = shared(name), schemes.scheme_class(name)
    assert type(agg) is cls and agg.input_stage in agg.stages and isinstance(agg.scales_in_n(), bool)
    # a round configuration's options are constructor options: the registry rebuilds the scheme from them
    assert set(agg.options()) <= cls.option_names() == schemes.options(name)
    assert schemes.make(name, **agg.options()).options() == agg.options()
    with pytest.raises(InputError, match="takes no option no_such_option"):
        schemes.make(name, no_such_option=1)
    # the hardware floor model covers every party kind of a round, from the round's own figures
    ups = state_updates(N, seed=6)
    rep = agg.aggregate(ups, dropped=[0]).report
    kinds = {PartyId.parse(p).kind for p in rep.bytes_sent}
    traffic = {k: (rep.mean_bytes_sent(k), float(np.mean([v for p, v in rep.bytes_received.items()
                                                          if PartyId.parse(p).kind == k]))) for k in kinds}
    m = sum(v.numel() for v in ups[0].values() if v.dtype.is_floating_point)
    floor = cls.floor(N, m, len(rep.survivors), rep.params, traffic)
    assert set(floor) == kinds
    assert all(prg >= 0 and add > 0 and isinstance(basis, str) for prg, add, basis in floor.values())


# ---------------------------------------------------------------- differential privacy


@pytest.mark.parametrize("name", NAMES)
def test_every_scheme_takes_central_dp(name):
    assert "central" in schemes.dp_kinds(name)


@pytest.mark.parametrize("name,kind", DP_CASES)
def test_dp_noise_on_the_sum_has_the_stated_scale(name, kind):
    z, clip, n, d = 0.8, 0.5, 5, 4000
    agg = schemes.make(name, seed=5, dp=MECHANISMS[kind](z, clip))
    res = agg.aggregate([torch.zeros(d) for _ in range(n)])
    # distributed noise is sized for the fewest survivors the scheme guarantees; all n survive here
    z_present = z * math.sqrt(n / agg.min_survivors(n)) if kind == "distributed" else z
    noise = res.sum.numpy().astype(np.float64)
    assert abs(noise.mean()) < 5 * z_present * clip / math.sqrt(d)
    assert noise.std() == pytest.approx(z_present * clip, rel=0.05)  # about 4.5 standard errors of the estimate
    assert res.report.epsilon == pytest.approx(dp.epsilon(noise_multiplier=z_present, delta=1e-5), rel=0.01)
    assert res.report.delta == 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_dp_mechanisms_a_scheme_cannot_run_are_refused_when_built(name):
    for kind, mechanism in MECHANISMS.items():
        if kind not in schemes.dp_kinds(name):
            with pytest.raises(ConfigError):
                schemes.make(name, dp=mechanism(1.0, 1.0))


# ---------------------------------------------------------------- parties that live in their saved state


class Restarted(Party):
    """A party that exists only as its saved bytes: rebuilt with Scheme.party(config, identity, state) for every
    message and saved again after it (a process restart between any two messages)."""

    def __init__(self, cls, config, identity):
        self.id, self._cls, self._config, self._identity = identity.party, cls, config, identity
        self._state = cls.party(config, identity).state_dict()
        self.restarts = 0
        self.first: bytes | None = None  # the first message it got

    def handle(self, message, update=None):
        party = self._cls.party(self._config, self._identity, self._state)
        self.restarts += 1
        self.first = self.first or message
        reply = party.handle(message, update)
        self._state = party.state_dict()
        assert isinstance(self._state, bytes)
        return reply

    def state_dict(self) -> bytes:
        return self._state


@pytest.mark.parametrize("name", NAMES)
def test_parties_restored_from_their_saved_state_between_messages_finish_rounds(name):
    agg = schemes.make(name, seed=0)
    cls, ups = type(agg), state_updates(N, seed=4)
    helpers, keyholder = agg.roles()
    ids = keys.create_identities(N, helpers, keyholder)
    config = agg.config(ups[0], N, directory=Directory.of(ids.values()), weight_bound=1.0)
    parties = {p: Restarted(cls, config, i) for p, i in ids.items()}
    _, flats = flatten_all(ups)
    session = new_session()
    for round_, dropped in ((1, {}), (2, {N - 1: agg.stages[-1]})):
        sim = Simulation(config.scheme, N, agg.stages, agg.input_stage, dropped)
        totals = run_round(cls.coordinator(config, session, round_), parties, sim, lambda i: (ups[i], 1.0))
        after_input = agg.stages.index(agg.stages[-1]) > agg.stages.index(agg.input_stage)
        included = list(range(N)) if not dropped or after_input else list(range(N - 1))
        assert totals.included == included and totals.weight == pytest.approx(len(included), abs=1e-3)
        bound = totals.params.get("sum_error_bound", len(included) * 2.0**-config.frac_bits)
        assert np.abs(totals.floats - sum(flats[i].floats.astype(np.float64) for i in included)).max() <= bound
        assert np.array_equal(totals.ints, sum(flats[i].ints for i in included))
    # every party answered in round 1, and all but the client dropped in round 2 again
    assert all(p.restarts >= (1 if pid == PartyId.client(N - 1) else 2) for pid, p in parties.items())
    c0 = PartyId.client(0)  # its replay guard is part of its saved state: round 1 is refused after round 2
    with pytest.raises(ProtocolError, match="client/0"):
        cls.party(config, ids[c0], parties[c0].state_dict()).handle(parties[c0].first, lambda: (ups[0], 1.0))
