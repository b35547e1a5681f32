"""What the security fixes cost: the same rounds on the code before them and on this checkout, in one run.

    python benchmarks/bench_security_cost.py --before /path/to/old/checkout [--n 100] [--m 100000] [--repeats 5]

For each scheme, fresh processes alternate between the two trees (order swapped every repeat); each
process runs one warm-up round (keys, JIT) and one timed round of n clients and m float32 parameters
and prints the report's seconds per party kind (the time each party spends on its own work) and the
round's process CPU time. Figures are medians over the repeats:
"aggregators" sums the parties that aggregate (server; leader and helpers; server and key holder),
"client" is the mean client. Both trees import from their own folder through PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMES = {
    "additive": "securefl.AdditiveSharing(num_aggregators=3, seed=0)",
    "secagg": "securefl.SecAgg(threshold=0.6, seed=0)",
    "ckks": "securefl.CKKS(seed=0)",
    "paillier": "securefl.Paillier(seed=0)",
}
AGGREGATING = ("server", "leader", "helper", "keyholder")

PROBE = """
import json, time, torch, securefl
torch.manual_seed(0)
ups = [torch.randn({m}) * 0.1 for _ in range({n})]
agg = {make}
agg.aggregate(ups)
t0 = time.process_time()
rep = agg.aggregate(ups).report
cpu = time.process_time() - t0
kinds = {{}}
for name, s in rep.party_seconds.items():
    kinds.setdefault(name.split("/")[0], []).append(s)
print(json.dumps({{"cpu": cpu, "kinds": {{k: [sum(v), len(v)] for k, v in kinds.items()}},
                  "client_bytes": rep.bytes_sent.get("client/0", 0)}}))
"""


def run(tree: Path, scheme: str, n: int, m: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = PROBE.format(n=n, m=m, make=SCHEMES[scheme])
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(results: list[dict]) -> dict[str, float]:
    agg = [sum(v[0] for k, v in r["kinds"].items() if k in AGGREGATING) for r in results]
    client = [r["kinds"]["client"][0] / r["kinds"]["client"][1] for r in results]
    return {"aggregators_s": statistics.median(agg), "client_s": statistics.median(client),
            "round_cpu_s": statistics.median(r["cpu"] for r in results), "client_bytes": results[0]["client_bytes"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="a checkout of the code before the security fixes")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--m", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--schemes", default="additive,secagg,ckks")
    a = p.parse_args()
    print(f"n={a.n}, m={a.m}, {a.repeats} alternating repeats per tree; one timed round each, medians: party seconds "
          "(aggregators summed, mean client) and the round's process CPU seconds")
    print(f"{'scheme':9} {'figure':14} {'before':>10} {'after':>10} {'after/before':>13}")
    for scheme in a.schemes.split(","):
        got: dict[str, list[dict]] = {"before": [], "after": []}
        for i in range(a.repeats):
            order = [("before", a.before), ("after", ROOT)]
            for label, tree in order if i % 2 == 0 else order[::-1]:
                got[label].append(run(tree, scheme, a.n, a.m))
        b, f = summary(got["before"]), summary(got["after"])
        for key in ("aggregators_s", "client_s", "round_cpu_s", "client_bytes"):
            print(f"{scheme:9} {key:14} {b[key]:10.4g} {f[key]:10.4g} {f[key] / b[key]:13.3f}")


if __name__ == "__main__":
    main()
