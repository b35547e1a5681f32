"""A plain PyTorch federated loop where one line (the averaging) is swapped for a secure aggregator."""

import torch
from torch import nn

import securefl

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 2))
clients = [(torch.randn(64, 20), torch.randint(0, 2, (64,))) for _ in range(5)]  # your own data


def train_one_client(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


agg = securefl.SecAgg(threshold=0.6)  # or AdditiveSharing, CKKS, Paillier, Plaintext: see the README
for rnd in range(3):
    start = {k: v.clone() for k, v in model.state_dict().items()}
    updates, weights = [], []
    for x, y in clients:
        model.load_state_dict(start)
        train_one_client(model, x, y)
        updates.append({k: v - start[k] for k, v in model.state_dict().items()})
        weights.append(len(y))
    result = agg.aggregate(updates, weights)  # instead of averaging the updates yourself
    model.load_state_dict({k: start[k] + result.mean[k] for k in start})
    print(f"round {rnd}: {len(result.report.survivors)} clients, {result.report.bytes_sent['client/0']} bytes/client")
