"""Deploy a scheme across machines, over any transport: the federation on disk, each party from its own files.

    fed/
      config.json           the RoundConfig every party loads (scheme, options, directory, model, clip, DP, timeouts)
      directory.json        the public identities of every party (also inside config.json)
      client-0.pem ...      one private key per party; each lives only on its own machine
      helper-1.pem          (AdditiveSharing) / keyholder.pem (CKKS, Paillier)

A trusted setup runs `write_federation` once and hands every party config.json and its own key file.
Then each machine builds its party with `load_party` and the server its coordinator with
`coordinator`; a transport carries the bytes (securefl.protocol):

    outbox = coord.start()                                   # server
    reply = party.handle(message, lambda: (update, weight))  # each party, on its own machine
    outbox = coord.step(replies)                             # until {}; then release(config, coord.result())

A party's `state_dict()` is its own storage between messages (a stateless process restores it with
`load_party(..., state=...)`); store it durably before sending the reply.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from securefl import schemes
from securefl.aggregator import Aggregator
from securefl.errors import ConfigError, InputError
from securefl.keys import Identity, create_identities, identity_path, save_federation
from securefl.protocol import Coordinator, Party, Totals, rebuild
from securefl.session import ModelSpec, RoundConfig
from securefl.wire import PartyId

if TYPE_CHECKING:
    from securefl.dp.accounting import Accountant

CONFIG_FILE = "config.json"


def write_federation(folder: str | os.PathLike, aggregator: Aggregator, template: object, clients: int, *,
                     weight_bound: float = 1.0, timeouts: Mapping[str, float] | None = None,
                     passphrase: bytes | str | None = None) -> RoundConfig:
    """Fresh identities for `clients` clients and the scheme's other parties, their key files, directory.json
    and config.json in `folder`; returns the configuration.

    template: one update, a model's state_dict, or a ModelSpec (securefl.flower.spec_of_arrays makes one
    from a Flower ArrayRecord). weight_bound: the largest weight (e.g. num-examples) any client may report.
    timeouts: seconds per stage name (and "default", "securefl.hello"), for the Flower transport.
    """
    helpers, keyholder = aggregator.roles()
    identities = create_identities(clients, helpers, keyholder)
    directory = save_federation(identities, folder, passphrase)
    if isinstance(template, ModelSpec):  # zero tensors of that structure
        layout = template.layout()
        template = layout.unflatten(np.zeros(layout.float_size), np.zeros(layout.int_size, np.int64))
    config = aggregator.config(template, clients, directory=directory, weight_bound=weight_bound)
    config = dataclasses.replace(config, timeouts=dict(timeouts or {}))
    config.save(Path(folder) / CONFIG_FILE)
    return config


def key_file(folder: str | os.PathLike, party: PartyId | str) -> Path:
    """Where write_federation put `party`'s private key."""
    return identity_path(folder, party)


def aggregator_of(config: RoundConfig) -> Aggregator:
    """The scheme object the coordinator's side uses for the round's release (DP noise and accounting, report):
    built from the configuration's own values."""
    from securefl.dp.mechanisms import Mechanism

    dp = None if config.dp is None else Mechanism.from_dict(config.dp)
    try:
        agg = schemes.make(config.scheme, clip=config.clip, frac_bits=config.frac_bits, int_bound=config.int_bound,
                           weight_bound=config.weight_bound, dp=dp, **config.options)
    except InputError as e:
        raise ConfigError(f"cannot rebuild scheme {config.scheme!r} from its configured options {config.options}: {e}; "
                          "pass aggregator= explicitly") from None
    if agg.options() != config.options:
        raise ConfigError(f"scheme {config.scheme!r} rebuilt with options {agg.options()}, configured "
                          f"{config.options}; pass aggregator= explicitly")
    return agg


def load_party(config: RoundConfig | str | os.PathLike, key: Identity | str | os.PathLike, *,
               passphrase: bytes | str | None = None, state: bytes | None = None) -> Party:
    """This machine's party (client, helper or key holder) from the configuration and its own key file,
    fresh or restored from its saved `state`."""
    if not isinstance(config, RoundConfig):
        config = RoundConfig.load(config)
    identity = key if isinstance(key, Identity) else Identity.load(key, passphrase)
    return schemes.scheme_class(config.scheme).party(config, identity, state)


def coordinator(config: RoundConfig, session: bytes, round_: int, clients: Sequence[int] | None = None,
                accountant: Accountant | None = None) -> Coordinator:
    """The server's (or AdditiveSharing leader's) coordinator of one round; with DP, pass the deployment's
    long-lived Accountant so the epsilon it reports is cumulative."""
    return schemes.scheme_class(config.scheme).coordinator(config, session, round_, clients, accountant)


def release(config: RoundConfig, totals: Totals) -> tuple[object, object]:
    """(weighted mean, sum) in the model's structure from a coordinator's `result()`."""
    return rebuild(totals, config.model.layout(), config.weight_bound)
