"""A federation on disk (identity keys, the pinned directory, the round configuration) and the scheme it names.

    fed/
      directory.json        public identities of every party: every party pins it (inside config.json too)
      config.json           the RoundConfig every party loads (scheme, options, model, clip, DP, timeouts)
      client-0.pem ...      one private key per party; in a deployment each lives only on its own machine
      helper-1.pem          (AdditiveSharing) / keyholder.pem (CKKS, Paillier)

`write_federation` creates all of it in one place (a simulation, or a trusted setup that then hands
each party its own key file); `scheme_class` and `aggregator_of` turn a RoundConfig back into the
scheme whose parties and coordinator a deployment runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from securefl import schemes
from securefl.aggregator import Aggregator
from securefl.errors import ConfigError, InputError
from securefl.keys import create_identities, identity_path, save_federation
from securefl.session import ModelSpec, RoundConfig
from securefl.wire import PartyId, Role

CONFIG_FILE = "config.json"


def scheme_class(scheme: RoundConfig | str) -> type[Aggregator]:
    """The Aggregator class of a scheme (by name, or a configuration's); ConfigError when it has no deployable
    parties yet."""
    name = scheme.scheme if isinstance(scheme, RoundConfig) else str(scheme)
    try:
        entry = schemes.SCHEMES[name]
    except KeyError:
        raise ConfigError(f"unknown scheme {name!r}; known: {', '.join(schemes.names())}") from None
    cls = entry.load() if isinstance(entry, schemes.Entry) else type(entry())
    if cls.party.__func__ is Aggregator.party.__func__ or cls.coordinator.__func__ is Aggregator.coordinator.__func__:
        raise ConfigError(f"scheme {name!r} does not expose its parties (Aggregator.party/coordinator) yet, "
                          "so it cannot run across processes")
    return cls


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


def simulation_parties(config: RoundConfig) -> list[PartyId]:
    """The parties of a simulated federation, one per Flower partition: clients, then helpers, then the key holder."""
    order = {Role.CLIENT: 0, Role.HELPER: 1, Role.KEYHOLDER: 2}
    return sorted(config.directory, key=lambda p: (order[p.role], p.index))


def key_file(folder: str | os.PathLike, party: PartyId | str) -> Path:
    """Where write_federation put `party`'s private key."""
    return identity_path(folder, party)
