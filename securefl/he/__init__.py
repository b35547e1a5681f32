"""Homomorphic-encryption aggregation: CKKS (securefl.he.ckks) and packed Paillier (securefl.he.paillier).

Both run the same parties: clients (securefl.he.base.Client) encrypt under a key holder's public
key, seal the ciphertexts to it (securefl.he.sealing: nobody else ever sees one) and sign their
uploads; the server (securefl.he.server.Server, the round's coordinator) relays the key and forwards
the signed uploads; the key holder (securefl.he.base.KeyHolder, its own node) opens and re-adds them
and decrypts one checked sum per round. The threat model: securefl.he.aggregator.HEAggregator. Every
party is built from its own RoundConfig and Identity (`CKKS.party`, `Paillier.party`,
`.coordinator`) and saves its state as bytes (securefl.he.state). The schemes supply only
parameters, key generation, encryption, homomorphic addition, decryption and packing.
"""
