"""Result and Report: what one aggregation returns and what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Report:
    """Cost and outcome of one aggregation round.

    bytes_sent / bytes_received are per party name ("client/3", "server", "helper/1", ...);
    seconds maps phase -> party kind -> seconds summed over the parties of that kind;
    party_seconds is the total per party name (the slowest party of a kind is its max).
    """

    scheme: str
    clients: int
    survivors: list[int]
    dropped: dict[int, str]
    bytes_sent: dict[str, int]
    bytes_received: dict[str, int]
    seconds: dict[str, dict[str, float]]
    party_seconds: dict[str, float]
    clipped_values: int = 0
    epsilon: float | None = None
    delta: float | None = None
    params: dict = field(default_factory=dict)

    def kind_seconds(self, kind: str) -> float:
        """Seconds summed over all parties of one kind and all phases."""
        return sum(v for name, v in self.party_seconds.items() if name.split("/")[0] == kind)

    def mean_bytes_sent(self, kind: str) -> float:
        """Mean bytes sent per party of one kind (over the parties that sent anything)."""
        vals = [v for n, v in self.bytes_sent.items() if n.split("/")[0] == kind]
        return sum(vals) / len(vals) if vals else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dropped"] = {str(k): v for k, v in self.dropped.items()}
        return d


@dataclass
class Result:
    """The aggregate: weighted mean and sum, in the structure of one update, and its report."""

    mean: object
    sum: object
    report: Report
