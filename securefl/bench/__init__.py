"""`securefl bench`: every registered scheme's cost against Plaintext, the hardware floor and peer libraries.

config (Config and the quick/full presets), workload (the updates and dropouts of a point), harness
(the matrix and its medians), floors (AES-CTR and memory throughput, per-scheme floors), memory
(peak RSS of a round), peers (baselines from peer libraries, shipped in securefl.bench.peers),
output (JSON, markdown, plots), command (the subcommand). Imports run one way: command -> harness
-> peers, floors, memory, output -> config, workload.
"""
