"""Identity keys, the pinned directory, round configurations and the replay guard."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl import keys
from securefl.errors import ConfigError, InputError, ProtocolError
from securefl.keys import Directory, Identity
from securefl.session import ModelSpec, ReplayGuard, RoundConfig, RoundContext, new_session
from securefl.wire import KEYHOLDER, PartyId, Role
from tests.conftest import SmallNet


def test_party_ids_round_trip_and_refuse_nonsense():
    for text in ("client/0", "client/41", "helper/2", "server", "leader", "keyholder"):
        assert str(PartyId.parse(text)) == text
    for bad in ("client", "helper/", "server/1", "bob/2", "client/-1", "client/x", ""):
        with pytest.raises(InputError):
            PartyId.parse(bad)
    assert PartyId.client(3).kind == "client" and PartyId.client(3) < PartyId.helper(1)


def test_identity_saves_encrypted_and_refuses_a_wrong_passphrase(tmp_path):
    me = Identity.generate("client/3")
    me.save(tmp_path / "k.pem", passphrase="correct horse")
    raw = (tmp_path / "k.pem").read_bytes()
    assert b"ENCRYPTED" in raw and (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    back = Identity.load(tmp_path / "k.pem", passphrase="correct horse")
    assert back.party == PartyId.client(3) and back.public_key == me.public_key
    with pytest.raises(InputError):
        Identity.load(tmp_path / "k.pem", passphrase="wrong")
    with pytest.raises(InputError):
        Identity.load(tmp_path / "k.pem")
    me.save(tmp_path / "plain.pem")
    assert Identity.load(tmp_path / "plain.pem").public_key == me.public_key


def test_directory_pins_keys_and_names_the_signer(tmp_path):
    ids = keys.create_identities(clients=4, helpers=2, keyholder=True)
    directory = keys.save_federation(ids, tmp_path, passphrase=b"pw")
    loaded = Directory.load(tmp_path / "directory.json")
    assert loaded == directory and loaded.fingerprint == directory.fingerprint
    assert (loaded.clients, loaded.helpers, loaded.has_keyholder) == (4, 2, True)
    assert Identity.load(keys.identity_path(tmp_path, "helper/2"), b"pw").public_key == loaded[PartyId.helper(2)]
    msg = b"round config"
    loaded.verify(PartyId.client(1), ids[PartyId.client(1)].sign(msg), msg, "test")
    with pytest.raises(ProtocolError, match="client/2"):  # client/1's signature is not client/2's
        loaded.verify(PartyId.client(2), ids[PartyId.client(1)].sign(msg), msg, "test")
    with pytest.raises(ProtocolError, match="not in the pinned directory"):
        loaded.verify(PartyId.client(9), b"\0" * 64, msg, "test")
    other = Directory.of(keys.create_identities(clients=4).values())
    assert other.fingerprint != loaded.fingerprint


def test_directory_refuses_gaps_duplicates_and_bad_files():
    a, b = Identity.generate("client/0"), Identity.generate("client/2")
    with pytest.raises(ConfigError, match="without gaps"):
        Directory.of([a, b])
    with pytest.raises(ConfigError, match="share a public key"):
        Directory({PartyId.client(0): (a.public_key, a.agreement_key), PartyId.client(1): (b.public_key,
                                                                                            a.agreement_key)})
    with pytest.raises(ConfigError):
        Directory({"server": (a.public_key, a.agreement_key)})
    with pytest.raises(ConfigError):
        Directory({"client/0": (a.public_key, b"\0" * 31)})
    with pytest.raises(ConfigError):
        Directory.from_json('{"format": "other"}')
    with pytest.raises(ConfigError):
        Directory.from_json("not json")
    with pytest.raises(ConfigError):
        Directory.from_dict({"format": "securefl-directory/2", "parties": {"client/0": {"sign": "@@@", "agree": ""}}})


def _config(**kw) -> RoundConfig:
    ids = keys.create_identities(clients=3)
    return RoundConfig("secagg", Directory.of(ids.values()), ModelSpec.of(SmallNet().state_dict()),
                       options={"threshold": 0.6}, **kw)


def test_round_config_round_trips_and_fingerprints_every_field(tmp_path):
    cfg = _config(timeouts={"share_keys": 30})
    cfg.save(tmp_path / "round.json")
    back = RoundConfig.load(tmp_path / "round.json")
    assert back == cfg and back.fingerprint == cfg.fingerprint and back.n == 3
    layout = back.model.layout()
    ref = SmallNet().state_dict()
    floats = sum(v.numel() for v in ref.values() if v.is_floating_point())
    assert layout.keys == tuple(ref) and layout.float_size == floats
    d = cfg.to_dict()
    for key, value in [("clip", 4.0), ("frac_bits", 12), ("options", {"threshold": 0.7}), ("min_clients", 2),
                       ("weight_bound", 3.0)]:
        changed = RoundConfig.from_dict({**d, key: value})
        assert changed.fingerprint != cfg.fingerprint, key


def test_round_config_refuses_malformed_input():
    d = _config().to_dict()
    for bad in ({**d, "format": "x"}, {**d, "clip": -1}, {**d, "setup_seed": "AAAA"}, {**d, "options": {"a": [1]}},
                {k: v for k, v in d.items() if k != "model"}, {**d, "model": {"kind": "tensor", "keys": [],
                                                                              "tensors": []}}):
        with pytest.raises(ConfigError):
            RoundConfig.from_dict(bad)
    with pytest.raises(ConfigError):
        RoundConfig.from_json("{")


def test_model_spec_refuses_non_string_mapping_keys():
    with pytest.raises(ConfigError):
        ModelSpec.of({1: torch.zeros(2)})


@given(st.binary(min_size=16, max_size=16), st.integers(0, 2**32 - 1), st.binary(max_size=8))
@settings(max_examples=50, deadline=None)
def test_context_digest_binds_every_part(session, rnd, extra):
    fp = bytes(32)
    base = RoundContext(fp, session, rnd).digest(b"label", extra)
    assert RoundContext(fp, session, rnd).digest(b"other", extra) != base
    assert RoundContext(b"\1" * 32, session, rnd).digest(b"label", extra) != base
    assert RoundContext(fp, session, (rnd + 1) % 2**32).digest(b"label", extra) != base
    assert RoundContext(fp, session, rnd).digest(b"label", extra + b"\0") != base


def test_replay_guard_refuses_old_and_repeated_rounds_after_a_restart():
    s = new_session()
    g = ReplayGuard()
    g.admit(s, 1, "client/0")
    g.admit(s, 5, "client/0")
    restored = ReplayGuard.from_dict(json.loads(json.dumps(g.to_dict())))
    for old in (5, 4, 0):
        with pytest.raises(ProtocolError, match="client/0"):
            restored.admit(s, old, "client/0")
    restored.admit(s, 6, "client/0")
    restored.admit(new_session(), 0, "client/0")  # another session starts afresh


def test_keyholder_entry_and_roles():
    ids = keys.create_identities(clients=2, keyholder=True)
    d = Directory.of(ids.values())
    assert d.public_key(KEYHOLDER) == ids[KEYHOLDER].public_key
    assert [p.role for p in d] == [Role.CLIENT, Role.CLIENT, Role.KEYHOLDER]


def test_pairwise_keys_agree_only_between_the_two_parties():
    ids = keys.create_identities(clients=2, helpers=1)
    d = Directory.of(ids.values())
    c0, c1, h1 = ids[PartyId.client(0)], ids[PartyId.client(1)], ids[PartyId.helper(1)]
    k = c0.pairwise_key(h1.party, d.agreement_key(h1.party), b"test")
    assert k == h1.pairwise_key(c0.party, d.agreement_key(c0.party), b"test")
    assert k != c1.pairwise_key(h1.party, d.agreement_key(h1.party), b"test")
    assert k != c0.pairwise_key(h1.party, d.agreement_key(h1.party), b"other")
    restored = Identity.from_pem(c0.to_pem())
    assert restored.pairwise_key(h1.party, d.agreement_key(h1.party), b"test") == k
