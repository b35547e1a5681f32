"""Registration: which Flower node is which securefl party, proven with the party's identity key.

Flower gives each SuperNode a random node id at registration, so the server learns the mapping
node -> PartyId once per run: it sends every node a hello (a fresh nonce, the session, the run and
the node's id, and the fingerprint of its round configuration); the node checks the fingerprint
against its own configuration and answers with its party name and an Ed25519 signature over all
of it. The server accepts the answer only if the signature verifies under the key its pinned
directory lists for that party. The signature binds the configuration, the session, the Flower run,
the node id and the nonce, so an answer cannot be replayed into another run, session or node.

Routing is the server's business and no scheme's security rests on it: a node that registers under
a false name still cannot sign as that party inside the scheme's own messages.
"""

from __future__ import annotations

import struct

from securefl.errors import ProtocolError
from securefl.keys import Identity
from securefl.session import RoundConfig
from securefl.wire import SESSION_BYTES, PartyId, Role

HELLO_STAGE = "securefl.hello"
VERSION = 1
NONCE_BYTES = 32
SIGNATURE_BYTES = 64
MAX_NAME = 64
_LABEL = b"securefl/flower/hello/v1"
_REQUEST = struct.Struct(f"<B{SESSION_BYTES}s{NONCE_BYTES}s32sQQ")
_REPLY_HEAD = struct.Struct("<BB")


def request(config: RoundConfig, session: bytes, nonce: bytes, run_id: int, node_id: int) -> bytes:
    """The server's hello to one node."""
    return _REQUEST.pack(VERSION, session, nonce, config.fingerprint, run_id, node_id)


def _digest(config: RoundConfig, session: bytes, nonce: bytes, run_id: int, node_id: int, party: PartyId) -> bytes:
    return config.context(session, 0).digest(_LABEL, nonce, struct.pack("<QQ", run_id, node_id), str(party).encode())


def answer(message: bytes, config: RoundConfig, identity: Identity, run_id: int, node_id: int) -> bytes:
    """A node's signed answer; ProtocolError when the hello is malformed, for another configuration, run or node."""
    me = str(identity.party)
    if len(message) != _REQUEST.size:
        raise ProtocolError(f"{me}: hello of {len(message)} bytes, expected {_REQUEST.size}")
    version, session, nonce, fingerprint, h_run, h_node = _REQUEST.unpack(message)
    if version != VERSION:
        raise ProtocolError(f"{me}: hello version {version}, expected {VERSION}")
    if fingerprint != config.fingerprint:
        raise ProtocolError(f"{me}: the server runs another round configuration (fingerprint {fingerprint.hex()[:16]}, "
                            f"mine {config.fingerprint.hex()[:16]}); refusing to take part")
    if (h_run, h_node) != (run_id, node_id):
        raise ProtocolError(f"{me}: hello addressed to run {h_run} node {h_node}, but this is run {run_id} "
                            f"node {node_id}")
    name = me.encode()
    signature = identity.sign(_digest(config, session, nonce, run_id, node_id, identity.party))
    return _REPLY_HEAD.pack(VERSION, len(name)) + name + signature


def verify(reply: bytes, config: RoundConfig, session: bytes, nonce: bytes, run_id: int, node_id: int) -> PartyId:
    """The party a node proved to be; ProtocolError unless its signature verifies under the pinned directory."""
    who = f"server: hello of node {node_id}"
    if len(reply) < _REPLY_HEAD.size:
        raise ProtocolError(f"{who}: truncated answer")
    version, size = _REPLY_HEAD.unpack_from(reply)
    if version != VERSION or size > MAX_NAME or len(reply) != _REPLY_HEAD.size + size + SIGNATURE_BYTES:
        raise ProtocolError(f"{who}: malformed answer (version {version}, {len(reply)} bytes)")
    try:
        party = PartyId.parse(reply[_REPLY_HEAD.size:_REPLY_HEAD.size + size].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"{who}: answer names no party") from None
    if party.role in (Role.SERVER, Role.LEADER):
        raise ProtocolError(f"{who}: claims to be the {party}, which runs inside the ServerApp")
    signature = reply[-SIGNATURE_BYTES:]
    config.directory.verify(party, signature, _digest(config, session, nonce, run_id, node_id, party), who)
    return party
