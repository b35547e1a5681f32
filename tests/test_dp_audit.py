"""The privacy audit: per-party epsilon from the noise each party sees (attack 6), one-run epsilon lower bound,
the transcript distinguisher, `securefl audit` and DP runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from securefl import dp
from securefl.cli import main
from securefl.dp import audit, transcript
from securefl.plaintext import Plaintext


def _party(rep, kind):
    return next(p for p in rep.parties if p.kind == kind)


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
    server = _party(rep, "server")
    assert math.isinf(server.epsilon)
    assert "none: sees each update without noise" in rep.to_markdown()
    assert json.loads(rep.to_json())["parties"][1]["epsilon"] == "inf"


def test_privacy_report_of_plaintext_with_central_dp():
    rep = audit.privacy_report(Plaintext(seed=0, dp=dp.GaussianMechanism(1.0, 1.0)), clients=4, dim=32)
    assert rep.epsilon == pytest.approx(dp.epsilon(noise_multiplier=1.0, delta=1e-5), rel=0.01)
    assert rep.dropouts_tolerated == 3
    server = _party(rep, "server")
    assert server.parties == 1 and sum(c for c, _ in server.messages.values()) == 4
    assert server.bytes_received > 4 * 32 * 4
    assert "in the clear" in server.learns_alone
    md, js = rep.to_markdown(), json.loads(rep.to_json())
    assert "| server |" in md and "4.7" in md and js["parties"][0]["kind"] in ("client", "server")


def test_secagg_server_and_its_colluders_see_the_honest_survivors_noise():
    secagg = pytest.importorskip("securefl.mpc.secagg")
    n = 8
    rep = audit.privacy_report(secagg.SecAgg(seed=0, dp=dp.DistributedGaussian(1.0, 1.0)), clients=n, dim=32)
    m = rep.dp["min_survivors"]
    server = _party(rep, "server")
    coalition = next(p for p in rep.parties if p.kind.startswith("server + "))
    colluders = int(coalition.kind.split()[2])
    assert server.epsilon == pytest.approx(dp.epsilon(noise_multiplier=math.sqrt(n / m), delta=1e-5), rel=1e-3)
    honest = n - colluders
    assert coalition.epsilon == pytest.approx(dp.epsilon(noise_multiplier=math.sqrt(honest / m), delta=1e-5),
                                              rel=1e-3)
    assert coalition.epsilon > server.epsilon


def test_he_key_holder_with_central_dp_gets_no_dp_and_the_server_gets_the_accountants():
    paillier = pytest.importorskip("securefl.he.paillier")
    rep = audit.privacy_report(paillier.Paillier(seed=0, dp=dp.GaussianMechanism(1.0, 1.0)), clients=3, dim=16)
    assert math.isinf(_party(rep, "keyholder").epsilon)
    assert _party(rep, "server").epsilon == pytest.approx(dp.epsilon(noise_multiplier=1.0, delta=1e-5), rel=1e-6)


def test_privacy_report_of_additive_sharing_names_the_collusion():
    additive = pytest.importorskip("securefl.mpc.additive")
    rep = audit.privacy_report(additive.AdditiveSharing(num_aggregators=3, seed=0, dp=dp.DistributedGaussian(1.0, 1.0)),
                               clients=4, dim=32)
    kinds = {p.kind: p for p in rep.parties}
    assert {"leader", "helper"} <= set(kinds) and kinds["helper"].parties == 2
    assert "all 3 aggregators" in kinds["helper"].collusion_needed
    m = rep.dp["min_survivors"]
    assert kinds["helper"].epsilon is None  # shares only
    assert kinds["leader"].epsilon == pytest.approx(dp.epsilon(noise_multiplier=math.sqrt(4 / m), delta=1e-5),
                                                    rel=1e-3)
    assert kinds["all 3 aggregators"].epsilon == pytest.approx(dp.epsilon(noise_multiplier=math.sqrt(1 / m),
                                                                          delta=1e-5), rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_run_lower_bound_stays_below_the_accountant(seed):
    res = audit.one_run_audit(Plaintext(dp=dp.GaussianMechanism(1.0, 1.0)), canaries=400, seed=seed)
    assert res.epsilon_accountant == pytest.approx(dp.epsilon(noise_multiplier=1.0, delta=1e-5), rel=0.01)
    assert 0.0 <= res.epsilon_lower_bound < res.epsilon_accountant


def test_one_run_lower_bound_distributed_stays_below_the_accountant():
    res = audit.one_run_audit(Plaintext(dp=dp.DistributedGaussian(0.7, 1.0)), canaries=160, seed=4)
    assert res.epsilon_lower_bound < res.epsilon_accountant


def test_one_run_audit_detects_a_missing_noise():
    broken = audit.one_run_audit(Plaintext(), canaries=600, seed=0)
    assert broken.correct == broken.guesses  # every membership guess right
    assert broken.epsilon_lower_bound > 4.0
    noisy = audit.one_run_audit(Plaintext(dp=dp.GaussianMechanism(1.0, 1.0)), canaries=600, seed=0)
    assert broken.epsilon_lower_bound > 3 * noisy.epsilon_lower_bound


def test_lower_bound_is_monotone_in_correct_guesses():
    bounds = [audit.epsilon_lower_bound(1000, 200, v, 1e-5) for v in (100, 140, 180, 200)]
    assert bounds[0] == 0.0 and bounds == sorted(bounds) and bounds[-1] > bounds[-2]


@pytest.mark.parametrize("mech,clients,runs", [(None, 6, 12), (dp.DistributedGaussian(1.0, 1.0), 10, 16)])
def test_transcript_distinguisher_catches_plaintext(mech, clients, runs):
    """Even with each update under its own DP noise share (a weaker signal: more clients and runs)."""
    check = audit.transcript_check(Plaintext(seed=0, dp=mech), clients=clients, runs=runs, dim=2048, seed=0)
    assert check.party == "server" and check.statistic > 0.9 and not check.indistinguishable


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


def test_audit_command_writes_json(tmp_path):
    out = tmp_path / "a.json"
    assert main(["audit", "--aggregator", "plaintext", "--dp", "central", "--canaries", "200", "--json",
                 str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["one_run_audit"]["epsilon_lower_bound"] < data["one_run_audit"]["epsilon_accountant"]
    assert data["transcript_check"]["indistinguishable"] is False
    assert next(p for p in data["report"]["parties"] if p["kind"] == "server")["epsilon"] == "inf"


def test_run_with_dp_reports_growing_epsilon(tmp_path):
    out = tmp_path / "m.json"
    assert main(["run", "--aggregator", "plaintext", "--rounds", "2", "--clients", "4", "--local-epochs", "1",
                 "--dp", "distributed", "--json", str(out)]) == 0
    eps = [r["epsilon"] for r in json.loads(out.read_text())["rounds"]]
    assert 0 < eps[0] < eps[1]


@pytest.mark.slow
def test_distributed_accuracy_within_5_points_of_central(tmp_path):
    acc = {}
    for mode in ("central", "distributed"):
        out = tmp_path / f"{mode}.json"
        assert main(["run", "--aggregator", "additive", "--clients", "50", "--dp", mode, "--noise-multiplier", "0.5",
                     "--clip", "1.0", "--rounds", "30", "--json", str(out)]) == 0
        acc[mode] = json.loads(out.read_text())["rounds"][-1]["accuracy"]
    assert acc["central"] > 0.75  # the comparison is made where DP training learns
    assert abs(acc["distributed"] - acc["central"]) <= 0.05
