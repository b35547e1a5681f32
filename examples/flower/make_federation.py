"""Write a federation for the digits app: every party's identity key, directory.json and config.json.

    python examples/flower/make_federation.py --scheme plaintext --clients 5 --out fed/

In a deployment, give each party only its own key file (client-3.pem, helper-1.pem, keyholder.pem)
and everyone config.json; the server needs config.json only.
"""

from __future__ import annotations

import argparse

from securefl import schemes
from securefl.datasets import federated_digits
from securefl.fedavg import make_model
from securefl.flower import simulation_parties, write_federation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheme", choices=schemes.names(), default="plaintext")
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--out", required=True, help="folder for config.json, directory.json and the keys")
    ap.add_argument("--alpha", type=float, default=0.5, help="the app's run config alpha (sizes the weight bound)")
    ap.add_argument("--seed", type=int, default=0, help="the app's run config seed")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per stage other than training")
    args = ap.parse_args()
    data = federated_digits(args.clients, args.alpha, args.seed)
    template = make_model("mlp", data.num_features, data.num_classes).state_dict()
    bound = max(len(y) for _, y in data.clients)  # the largest num-examples a client reports
    config = write_federation(args.out, schemes.make(args.scheme), template, args.clients, weight_bound=float(bound),
                              timeouts={"default": args.timeout, "securefl.hello": 300.0})
    parties = simulation_parties(config)
    print(f"{config.scheme}: {len(parties)} parties ({', '.join(map(str, parties))}); config {args.out}/config.json, "
          f"fingerprint {config.fingerprint.hex()[:16]}")


if __name__ == "__main__":
    main()
