"""`securefl bench`: every registered scheme's cost against Plaintext, the hardware floor and peer libraries.

harness (the matrix and its medians), floors (AES-CTR and memory throughput, per-scheme floors),
memory (peak RSS of a round), peers (baselines from benchmarks/*.py), output (JSON, markdown, plots).
"""
