"""The privacy audit: privacy report, one-run epsilon lower bound, transcript check, `securefl audit` and DP runs."""

from __future__ import annotations

import json

import pytest

from securefl import dp
from securefl.cli import main
from securefl.dp import audit
from securefl.plaintext import Plaintext


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


def test_privacy_report_of_plaintext_with_central_dp():
    rep = audit.privacy_report(Plaintext(seed=0, dp=dp.GaussianMechanism(1.0, 1.0)), clients=4, dim=32)
    assert rep.epsilon == pytest.approx(dp.epsilon(noise_multiplier=1.0, delta=1e-5), rel=0.01)
    assert rep.dropouts_tolerated == 3
    server = next(p for p in rep.parties if p.kind == "server")
    assert server.parties == 1 and server.messages["client:1"][0] == 4 and server.bytes_received > 4 * 32 * 4
    assert "in the clear" in server.learns_alone
    md, js = rep.to_markdown(), json.loads(rep.to_json())
    assert "| server |" in md and "4.3" in md and js["parties"][0]["kind"] in ("client", "server")


def test_privacy_report_of_additive_sharing_names_the_collusion():
    additive = pytest.importorskip("securefl.mpc.additive")
    rep = audit.privacy_report(additive.AdditiveSharing(num_aggregators=3, seed=0), clients=4, dim=32)
    kinds = {p.kind: p for p in rep.parties}
    assert {"leader", "helper"} <= set(kinds) and kinds["helper"].parties == 2
    assert "all 3 aggregators" in kinds["helper"].collusion_needed
    assert rep.epsilon is None


def test_transcript_check_flags_plaintext_and_passes_a_secure_scheme():
    assert not audit.transcript_check(Plaintext(seed=0), seed=0).indistinguishable
    additive = pytest.importorskip("securefl.mpc.additive")
    check = audit.transcript_check(additive.AdditiveSharing(seed=0), seed=0)
    assert check.party == "leader" and check.indistinguishable


def test_audit_command_writes_json(tmp_path):
    out = tmp_path / "a.json"
    assert main(["audit", "--aggregator", "plaintext", "--dp", "central", "--canaries", "200", "--json",
                 str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["one_run_audit"]["epsilon_lower_bound"] < data["one_run_audit"]["epsilon_accountant"]
    assert data["transcript_check"]["indistinguishable"] is False


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
