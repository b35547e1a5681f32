"""SecAgg (Bonawitz et al., CCS 2017) and SecAgg+ (Bell et al., CCS 2020): masking that survives dropouts.

Each client u masks its fixed-point vector x_u as y_u = x_u + PRG(b_u) + sum_v +/-PRG(s_uv) mod 2^b,
where s_uv comes from X25519 between u's and v's masking keys and b_u is a fresh self-mask seed.
u Shamir-shares b_u and its masking private key among its share holders (itself and its graph
neighbours: everyone for SecAgg, k ring neighbours for SecAgg+), so that once inputs are in, any t
live holders let the server remove b_v for every client v whose y_v arrived, and the pairwise masks
of every client that vanished after sharing. An honest client reveals at most one of the two
shares of any peer and (with the consistency check) only for a survivor list that t of its holders
signed.

Configuration, not messages. Every party builds its `Policy` from its own RoundConfig: the pinned
directory of client identity keys (and so n), the graph's trusted-setup seed (see
securefl.mpc.secagg.graph for what that requires of whoever creates it), the threshold / neighbour
options that fix k and t, signed_keys, consistency_check and the minimum batch. The server's setup
only carries what a client compares with its own view, and the setup digest -- the configuration's
fingerprint, the resolved parameters, the graph, the ring, the vector length, session and round
(RoundContext.digest) -- is in every signed key record, every survivor-list signature, every share
commitment and the associated data of every encrypted share: a client shown another view is
refused by its peers.

Freshness. A client takes part in a round only through its ReplayGuard (securefl.session), kept in
its saved state: a (session, round) not later than one it took part in is refused. Survivor-list
signatures also bind the signer's fresh key record, so an earlier round's signatures never verify,
even for a client that did not see that round.

Who must collude. For a target u whose shares h parties hold (h = n, or k + 1 in SecAgg+), an
actively malicious server learns x_u with min(t-1, 2t-h) colluding holders of u: t-1 by routing u
only colluders' keys (u's own share of b_u completes t), and already 2t-h (fewer when t < h) by
showing one group of honest holders a survivor list where u survived (they reveal b_u) and another
one where u dropped (they reveal u's masking key), the colluders signing both (Bonawitz et al.'s
active bound t > (h + c) / 2). An honest-but-curious server needs t colluding holders.

Cheating clients are named, and one cannot end a round for everyone. The server refuses a key
record with a small-order X25519 key (crypto.primitives.check_x25519_public, byte comparisons) or a
repeated key at advertise_keys, as each client does with the records relayed to it, and leaves its
advertiser out. A dealer commits to each share it sends (SHA-256 of the share and a 16-byte nonce,
in the clear to the server; the nonce travels in the ciphertext, and the commitments are in its
associated data). A holder whose entry from a dealer does not open or fails its commitments keeps
no share of that dealer and no mask with it, and reports it with its masked input (no more than a
server gets by not forwarding the entry: the holder still needs t holders with sound shares); the
server leaves out one end of every report, treated as dropped after share_keys (see
securefl.mpc.secagg.server). Left-out clients are in the report's params["rejected"] and in any
DropoutError. The server checks every reconstructed secret against its owner's record and, only when
one fails, that secret's shares against their commitments (securefl.mpc.secagg.unmask). Sums assume
that clients encode honestly: a client can add any ring vector to its input undetected (input
validity is future work).

Stages (`Stage`; each client drops at one of them and sends nothing from there on), with their
message kinds (wire.Kind.SECAGG_*):

  advertise_keys     server -> SETUP (n, k, t, minimum batch, ring, length, flags, setup digest);
                     client -> KEYS: two X25519 keys and the b_u commitment, signed
  share_keys         server -> PEER_KEYS: neighbours' signed keys; client -> SHARES: per neighbour two
                     share commitments and the AES-GCM-encrypted shares
  masked_input       server -> SHARE_BUNDLE: the shares addressed to u; client -> MASKED_INPUT: y_u,
                     then the dealers whose shares failed (the client asks for its update here)
  consistency_check  server -> SURVIVORS: survivor bitmap; client -> SURVIVOR_SIGNATURE
  unmasking          server -> UNMASK_REQUEST: bitmap, holders' signatures, peers to unmask;
                     client -> REVEAL: b- or key-shares with their commitment nonces

The client-server channel is assumed authenticated (TLS), as in Bonawitz et al.; everything else
(keys, shares, survivor lists) is authenticated end to end. With signed_keys=False (Bonawitz's
honest-but-curious variant, the threat model of Flower's SecAgg+) keys are neither signed nor
verified and there is no consistency check; see SecAgg for what that gives up.

Modules: params (Stage, options, Policy, resolve_parameters), graph (SecAgg+ graphs and the (k, t)
finder), messages (wire fields, commitments, what signatures bind), client (Client, a Party), state
(the client's saved state), server (Server, the Coordinator), unmask (recovery and blame), scheme
(SecAgg, the aggregator).
"""

from securefl.mpc.secagg.client import Client
from securefl.mpc.secagg.params import (
    STAGES,
    Policy,
    ShareKind,
    Stage,
    colluders_needed,
    resolve_parameters,
)
from securefl.mpc.secagg.scheme import SecAgg
from securefl.mpc.secagg.server import Server

__all__ = ["STAGES", "Client", "Policy", "SecAgg", "Server", "ShareKind", "Stage", "colluders_needed",
           "resolve_parameters"]
