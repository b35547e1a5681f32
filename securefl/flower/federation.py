"""The parties of a simulated Flower federation, one per partition (the deployment helpers are securefl.deploy)."""

from __future__ import annotations

from securefl.session import RoundConfig
from securefl.wire import PartyId, Role


def simulation_parties(config: RoundConfig) -> list[PartyId]:
    """The parties of a simulated federation, one per Flower partition: clients, then helpers, then the key holder."""
    order = {Role.CLIENT: 0, Role.HELPER: 1, Role.KEYHOLDER: 2}
    return sorted(config.directory, key=lambda p: (order[p.role], p.index))
