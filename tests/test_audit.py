"""The privacy audit (securefl.audit): per-party epsilon from the noise each party sees (issue 10, attack 6), roles
read from the schemes themselves, exact collusion statements, the one-run lower bound of one round and of a whole
training run, the transcript distinguisher, and `securefl audit` / `securefl audit --run`."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from securefl import audit, dp
from securefl.aggregator import RoleView
from securefl.audit import canaries, run, transcript
from securefl.cli import main
from securefl.datasets import federated_digits
from securefl.fedavg import train
from securefl.plaintext import Plaintext
from tests.conftest import state_updates


def _party(rep, kind):
    return next(p for p in rep.parties if p.kind == kind)


def test_dp_imports_nothing_above_it():
    """The audit moved to the top layer: nothing in securefl/dp imports an aggregator, scheme, protocol or audit."""
    above = ("securefl.aggregator", "securefl.schemes", "securefl.protocol", "securefl.audit", "securefl.simulation",
             "securefl.plaintext", "securefl.mpc", "securefl.he")
    for path in (Path(dp.__file__).parent).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith(above)], f"{path.name} imports {names}"


def test_plaintext_server_gets_the_epsilon_of_one_noise_share():
    """Attack 6: the report used to claim the accountant's 4.4 against a Plaintext server that sees each update
    with only its own client's share (1/6 of the noise variance for n = 6)."""
    rep = audit.privacy_report(Plaintext(seed=0, dp=dp.DistributedGaussian(1.0, 1.0)), clients=6, dim=64)
    server = _party(rep, "server")
    assert server.sees == "updates"
    assert server.epsilon == pytest.approx(dp.epsilon(noise_multiplier=1 / math.sqrt(6), delta=1e-5), rel=1e-3)
    assert server.epsilon > 12.9
    assert rep.epsilon == pytest.approx(dp.epsilon(noise_multiplier=1.0, delta=1e-5), rel=1e-6)  # observers
    assert f"{server.epsilon:.3f}" in rep.to_markdown()


def test_a_party_that_adds_the_central_noise_gets_no_dp():
    rep = audit.privacy_report(Plaintext(seed=0, dp=dp.GaussianMechanism(1.0, 1.0)), clients=4, dim=32)
    assert math.isinf(_party(rep, "server").epsilon)
    assert "none: sees each update before any noise" in rep.to_markdown()
    assert next(p for p in json.loads(rep.to_json())["parties"] if p["kind"] == "server")["epsilon"] == "inf"


def test_privacy_report_of_plaintext_names_message_kinds_and_explains_every_figure():
    rep = audit.privacy_report(Plaintext(seed=0, dp=dp.GaussianMechanism(1.0, 1.0)), clients=4, dim=32, rounds=7)
    assert rep.epsilon == pytest.approx(dp.epsilon(noise_multiplier=1.0, delta=1e-5), rel=1e-6)
    assert rep.epsilon_cumulative == pytest.approx(dp.epsilon(noise_multiplier=1.0, rounds=7, delta=1e-5), rel=1e-6)
    assert rep.epsilon_min_batch is None  # central noise: the same whatever the batch
    assert rep.dropouts_tolerated == 3
    server = _party(rep, "server")
    assert server.parties == 1 and server.messages["client:PLAIN_UPLOAD"][0] == 4
    assert set(_party(rep, "client").messages) == {"server:PLAIN_REQUEST"}
    assert server.bytes_received > 4 * 32 * 4
    md = rep.to_markdown()
    for line in ("- epsilon per round: 4.729", "- cumulative epsilon:", "after 7 such rounds", "- count:",
                 "- messages:", "- epsilon against it:", "client:PLAIN_UPLOAD = 4 x"):
        assert line in md


def test_secagg_rows_state_the_exact_collusion_and_the_noise_each_sees():
    secagg = pytest.importorskip("securefl.mpc.secagg")
    n = 8
    rep = audit.privacy_report(secagg.SecAgg(seed=0, dp=dp.DistributedGaussian(1.0, 1.0)), clients=n, dim=32)
    m, c, t = rep.dp["min_survivors"], rep.params["colluders_needed"], rep.params["threshold"]
    assert c == min(t - 1, 2 * t - rep.params["share_holders"])
    server = _party(rep, "server")
    assert f"{c} colluding share holders" in server.collusion_needed
    assert server.epsilon == pytest.approx(dp.epsilon(noise_multiplier=math.sqrt(n / m), delta=1e-5), rel=1e-3)
    coalition = _party(rep, f"server + {c} share holders")  # it unmasks one update: that client's share only
    assert coalition.parties == 0 and coalition.sees == "updates"
    assert coalition.epsilon == pytest.approx(dp.epsilon(noise_multiplier=math.sqrt(1 / m), delta=1e-5), rel=1e-3)
    assert rep.epsilon_min_batch == pytest.approx(dp.epsilon(noise_multiplier=1.0, delta=1e-5), rel=1e-3)
    assert rep.epsilon < rep.epsilon_min_batch < coalition.epsilon
    assert _party(rep, "client").epsilon is None
    assert all(k.split(":")[1].startswith("SECAGG_") for k in server.messages)


def test_secagg_without_signed_keys_needs_no_colluder():
    secagg = pytest.importorskip("securefl.mpc.secagg")
    rep = audit.privacy_report(secagg.SecAgg(seed=0, signed_keys=False), clients=5, dim=16)
    assert "nobody if malicious" in _party(rep, "server").collusion_needed
    assert math.isinf(_party(rep, "malicious server").epsilon)  # no DP: it sees an update exactly


def test_he_key_holder_with_central_dp_gets_no_dp_and_the_server_gets_the_accountants():
    paillier = pytest.importorskip("securefl.he.paillier")
    rep = audit.privacy_report(paillier.Paillier(seed=0, dp=dp.GaussianMechanism(1.0, 1.0)), clients=3, dim=16)
    eps = dp.epsilon(noise_multiplier=1.0, delta=1e-5)
    b = rep.params["min_clients"]
    assert math.isinf(_party(rep, "keyholder").epsilon) and math.isinf(_party(rep, "keyholder + server").epsilon)
    assert _party(rep, "server").epsilon == pytest.approx(eps, rel=1e-6)
    assert _party(rep, f"server + {b - 1} clients").epsilon == pytest.approx(eps, rel=1e-6)  # after the release noise
    assert f"{b - 1} colluding clients" in _party(rep, "server").collusion_needed


def test_additive_sharing_rows_name_the_collusion():
    additive = pytest.importorskip("securefl.mpc.additive")
    rep = audit.privacy_report(additive.AdditiveSharing(num_aggregators=3, seed=0, dp=dp.DistributedGaussian(1.0, 1.0)),
                               clients=4, dim=32)
    kinds = {p.kind: p for p in rep.parties}
    b = rep.params["min_clients"]
    assert {"leader", "helper", "all 3 aggregators", f"leader + {b - 1} clients"} <= set(kinds)
    assert kinds["helper"].parties == 2 and kinds["helper"].epsilon is None  # shares only
    assert "the other 2 aggregators" in kinds["helper"].collusion_needed
    m = rep.dp["min_survivors"]
    assert kinds["leader"].epsilon == pytest.approx(dp.epsilon(noise_multiplier=math.sqrt(4 / m), delta=1e-5),
                                                    rel=1e-3)
    one = dp.epsilon(noise_multiplier=math.sqrt(1 / m), delta=1e-5)
    assert kinds["all 3 aggregators"].epsilon == pytest.approx(one, rel=1e-3)
    assert kinds[f"leader + {b - 1} clients"].epsilon == pytest.approx(one, rel=1e-3)


def test_the_audit_reads_the_roles_a_scheme_states():
    """No scheme is recognised by name: a scheme's roles_view is what the report says, and a scheme that states
    nothing is reported as not assessed."""

    class Sealed(Plaintext):
        def roles_view(self, params):
            return {"server": RoleView("sealed boxes", "the box maker", "nothing"),
                    "server + box maker": RoleView("every update", "-", "updates")}

    class Silent(Plaintext):
        def roles_view(self, params):
            return {}

    rep = audit.privacy_report(Sealed(seed=0, dp=dp.GaussianMechanism(1.0, 1.0)), clients=3, dim=8)
    server = _party(rep, "server")
    assert (server.learns_alone, server.collusion_needed, server.epsilon) == ("sealed boxes", "the box maker", None)
    assert math.isinf(_party(rep, "server + box maker").epsilon)
    silent = audit.privacy_report(Silent(seed=0), clients=3, dim=8)
    assert _party(silent, "server").sees == "unknown" and "not assessed" in silent.to_markdown()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_run_lower_bound_stays_below_the_accountant(seed):
    res = audit.one_run_audit(Plaintext(dp=dp.GaussianMechanism(1.0, 1.0)), canaries=400, seed=seed)
    assert res.epsilon_accountant == pytest.approx(dp.epsilon(noise_multiplier=1.0, delta=1e-5), rel=0.01)
    assert res.rounds == 40 and res.clients_per_round == 10
    assert 0.0 <= res.epsilon_lower_bound < res.epsilon_accountant


def test_one_run_lower_bound_distributed_stays_below_the_accountant():
    res = audit.one_run_audit(Plaintext(dp=dp.DistributedGaussian(0.7, 1.0)), canaries=160, seed=4)
    assert res.epsilon_lower_bound < res.epsilon_accountant


def test_one_run_audit_detects_a_missing_noise():
    broken = audit.one_run_audit(Plaintext(), canaries=600, seed=0)
    assert broken.correct == broken.guesses  # every membership guess right
    assert broken.epsilon_lower_bound == broken.ceiling > 4.0
    noisy = audit.one_run_audit(Plaintext(dp=dp.GaussianMechanism(1.0, 1.0)), canaries=600, seed=0)
    assert broken.epsilon_lower_bound > 3 * noisy.epsilon_lower_bound


def test_one_run_audit_explains_why_its_accountant_figure_differs():
    secagg = pytest.importorskip("securefl.mpc.secagg")
    agg = secagg.SecAgg(seed=0, dp=dp.DistributedGaussian(1.0, 1.0))
    rep = audit.privacy_report(agg, clients=6, dim=16)
    res = audit.one_run_audit(agg, canaries=40, seed=0)
    lines = res.explain(rep)
    assert res.epsilon_accountant != pytest.approx(rep.epsilon, abs=1e-3)
    assert "differs from the per-round" in lines[1] and "10 clients' noise shares" in lines[1]
    assert "no violation found" in lines[1] and "ceiling" in lines[2]


def test_lower_bound_is_monotone_in_correct_guesses():
    bounds = [audit.epsilon_lower_bound(1000, 200, v, 1e-5) for v in (100, 140, 180, 200)]
    assert bounds[0] == 0.0 and bounds == sorted(bounds) and bounds[-1] > bounds[-2]


def test_guesses_take_the_highest_in_and_the_lowest_out():
    scores = np.array([5.0, -1.0, 0.2, 3.0, -2.0, 0.1])
    inside = np.array([True, False, True, False, False, True])
    assert canaries.guess(scores, inside, 4) == (4, 3)  # in: 5.0 (right), 3.0 (wrong); out: -2.0, -1.0 (right)


@pytest.mark.parametrize("mech,clients,runs", [(None, 6, 12), (dp.DistributedGaussian(1.0, 1.0), 10, 16)])
def test_transcript_distinguisher_catches_plaintext(mech, clients, runs):
    """Even with each update under its own DP noise share (a weaker signal: more clients and runs)."""
    check = audit.transcript_check(Plaintext(seed=0, dp=mech), clients=clients, runs=runs, dim=2048, seed=0)
    assert check.party == "server" and check.statistic > 0.9 and not check.indistinguishable
    assert "DISTINGUISHABLE" in check.summary()


def test_transcript_distinguisher_stays_at_chance_on_a_random_view():
    """The permutation test itself: a view that ignores the inputs (masked words) is not flagged."""
    x = np.random.default_rng(0).normal(size=(40, 24))
    labels = (np.arange(40) % 2)[None]
    assert 0.2 < transcript.loo_accuracy(x, labels)[0] < 0.8


@pytest.mark.parametrize("scheme", ["additive", "secagg"])
def test_transcript_distinguisher_stays_at_chance_on_masked_views(scheme):
    from securefl import schemes

    check = audit.transcript_check(schemes.make(scheme, seed=0), dim=512, seed=0, permutations=9999, alpha=2e-4)
    assert check.party in ("leader", "server") and check.indistinguishable, check  # false alarm: 2 in 10,000


def test_audit_command_writes_json_and_prints_kind_names(tmp_path, capsys):
    out = tmp_path / "a.json"
    assert main(["audit", "--aggregator", "plaintext", "--dp", "central", "--canaries", "200", "--json",
                 str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["one_run_audit"]["epsilon_lower_bound"] < data["one_run_audit"]["epsilon_accountant"]
    assert data["transcript_check"]["indistinguishable"] is False
    assert next(p for p in data["report"]["parties"] if p["kind"] == "server")["epsilon"] == "inf"
    text = capsys.readouterr().out
    for part in ("client:PLAIN_UPLOAD", "epsilon per round:", "cumulative epsilon:", "one-run audit", "ceiling:",
                 "seconds: privacy report"):
        assert part in text


# --- a whole training run ------------------------------------------------------------------------------------------

def test_canary_federation_steps_with_the_real_clients_mean():
    """Canaries ride on their own tensor: the mean handed to training is the real clients' (ints exactly)."""
    updates = state_updates(3, seed=1)
    inside = np.array([True, True, False, True])
    fed = run.CanaryFederation(Plaintext(seed=0), inside, 1.0, 1.0, np.random.default_rng(0))
    got = fed.aggregate(updates, weights=[1.0, 2.0, 3.0])
    want = Plaintext(seed=0).aggregate(updates, weights=[1.0, 2.0, 3.0])
    assert set(got.mean) == set(updates[0])
    for k, v in want.mean.items():
        if v.is_floating_point():
            torch.testing.assert_close(got.mean[k], v, atol=1e-4, rtol=0)
        else:
            assert torch.equal(got.mean[k], v)
    assert fed.last_canaries == 3
    np.testing.assert_allclose(fed.scores, inside.astype(float), atol=1e-4)


def test_run_audit_with_noise_stays_below_the_accountant():
    """z = 3: the accountant's epsilon (2.5) is below the ceiling of 50 guesses (2.8), so a bound at the ceiling
    would be a violation. (At z = 1 the accountant allows epsilon 9, and 50 right guesses of 50 is then a correct
    outcome about once in 50 runs: no assertion can refuse it.) Canary guesses are right about 70% of the time here."""
    data = federated_digits(3, 0.5, 0)
    res = audit.audit_run(Plaintext(seed=0, dp=dp.DistributedGaussian(3.0, 1.0)), data, canaries=100, rounds=3,
                          local_epochs=1)
    assert [r.round for r in res.rounds] == [1, 2, 3]
    eps = [r.epsilon for r in res.rounds]
    assert eps == sorted(eps) and eps[-1] > eps[0] > 0
    assert 0.0 <= res.final.lower_bound < res.final.epsilon
    assert res.final.lower_bound < res.ceiling
    assert res.final.epsilon < res.ceiling
    assert "| plaintext | distributed_gaussian z=3" in res.to_markdown()


def test_run_audit_without_noise_is_clearly_large_and_leaves_training_alone(tmp_path):
    """Noise off: every membership guess right, the bound at its ceiling (far above a noisy run's); the model learns
    as the same run without canaries does."""
    data = federated_digits(3, 0.5, 0)
    png, js = tmp_path / "run.png", tmp_path / "run.json"
    assert main(["audit", "--run", "--aggregator", "plaintext", "--dp", "none", "--clients", "3", "--rounds", "2",
                 "--canaries", "100", "--local-epochs", "1", "--plot", str(png), "--json", str(js)]) == 0
    out = json.loads(js.read_text())
    final = out["rounds"][-1]
    assert final["correct"] == final["guesses"] == 50
    assert final["lower_bound"] == pytest.approx(out["ceiling"]) and final["lower_bound"] > 2.5
    assert final["epsilon"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, plain = train(Plaintext(seed=0), data, rounds=2, local_epochs=1, seed=0)
    assert abs(final["accuracy"] - plain[-1].accuracy) <= 0.01
