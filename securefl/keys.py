"""Identity keys and the pinned directory of public identities.

Every party that signs (clients, AdditiveSharing helpers, the HE key holder) has a long-term
Ed25519 identity key, and a static X25519 agreement key derived from it (HKDF-SHA256 of the
private signing key, so one file holds both): two parties listed in the same directory share a
pairwise key without any message (static-static X25519), which lets them authenticate each other
with a MAC where a signature per round would cost too much. A deployment keeps each private key
on its party's machine (PEM, PKCS#8, optionally encrypted with a passphrase) and gives every party
the same directory: the two public keys of every client, helper and the key holder. Parties pin
the directory: a signature counts only when it verifies under the key the directory lists for its
signer, and the directory's fingerprint is part of every round configuration, so parties holding
different directories refuse each other's messages.

    ids = keys.create_identities(clients=10, helpers=2)          # in-memory, fresh from the OS CSPRNG
    keys.save_federation(ids, "fed/", passphrase=b"...")       # fed/directory.json + one PEM per party
    me = keys.Identity.load("fed/client-3.pem", passphrase=b"...")
    directory = keys.Directory.load("fed/directory.json")
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefl.errors import ConfigError, InputError, ProtocolError
from securefl.jsonfile import JsonRecord
from securefl.wire import KEYHOLDER, PartyId, Role

PUBLIC_KEY_BYTES = 32
DIRECTORY_FORMAT = "securefl-directory/2"
_AGREEMENT_LABEL = b"securefl/identity/x25519-agreement-key"
_PAIRWISE_LABEL = b"securefl/identity/pairwise-key"


def _passphrase(passphrase: bytes | str | None) -> bytes | None:
    if passphrase is None:
        return None
    return passphrase.encode() if isinstance(passphrase, str) else bytes(passphrase)


def _file_name(party: PartyId) -> str:
    return str(party).replace("/", "-") + ".pem"


class Identity:
    """One party's long-term Ed25519 signing key, held only by that party."""

    def __init__(self, party: PartyId, key: Ed25519PrivateKey):
        self.party = party
        self._key = key
        self.public_key = key.public_key().public_bytes_raw()
        seed = HKDF(hashes.SHA256(), 32, salt=None, info=_AGREEMENT_LABEL).derive(key.private_bytes_raw())
        self._agreement = X25519PrivateKey.from_private_bytes(seed)
        self.agreement_key = self._agreement.public_key().public_bytes_raw()

    def pairwise_key(self, peer: PartyId, peer_agreement_key: bytes, label: bytes) -> bytes:
        """A 32-byte key only this party and `peer` can compute (static-static X25519 + HKDF, both ids and
        `label` bound in), from the peer's pinned agreement key: authenticates without a signature."""
        try:
            shared = self._agreement.exchange(X25519PublicKey.from_public_bytes(bytes(peer_agreement_key)))
        except ValueError as e:
            raise ProtocolError(f"{self.party}: key agreement with {peer} failed: {e}") from None
        lo, hi = sorted((self.party, peer))
        info = _PAIRWISE_LABEL + b"\0" + label + b"\0" + f"{lo}|{hi}".encode()
        return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(shared)

    @classmethod
    def generate(cls, party: PartyId | str) -> Identity:
        """A fresh identity (from the OS CSPRNG, through `cryptography`)."""
        party = party if isinstance(party, PartyId) else PartyId.parse(party)
        return cls(party, Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of `message` (64 bytes)."""
        return self._key.sign(message)

    def to_pem(self, passphrase: bytes | str | None = None) -> bytes:
        """PKCS#8 PEM of the private key (encrypted with the best available scheme when a passphrase is given)."""
        pw = _passphrase(passphrase)
        enc = serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
        return f"# securefl identity: {self.party}\n".encode() + pem

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | str | None = None, party: PartyId | str | None = None
                 ) -> Identity:
        """Load a key written by to_pem (the party comes from its header line unless given)."""
        data = bytes(data)
        header = data.split(b"\n", 1)[0].decode(errors="replace")
        if party is None:
            if not header.startswith("# securefl identity: "):
                raise InputError("identity file has no '# securefl identity: <party>' line; pass party=")
            party = header.removeprefix("# securefl identity: ").strip()
        party = party if isinstance(party, PartyId) else PartyId.parse(party)
        try:
            key = serialization.load_pem_private_key(data, password=_passphrase(passphrase))
        except TypeError as e:  # encrypted without a passphrase, or a passphrase for a plain key
            raise InputError(f"identity of {party}: {e}") from None
        except ValueError:
            raise InputError(f"identity of {party}: not a PEM private key, or a wrong passphrase") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InputError(f"identity of {party}: not an Ed25519 key")
        return cls(party, key)

    def save(self, path: str | os.PathLike, passphrase: bytes | str | None = None) -> None:
        """Write the private key to `path`, readable by the owner only."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.to_pem(passphrase))

    @classmethod
    def load(cls, path: str | os.PathLike, passphrase: bytes | str | None = None) -> Identity:
        return cls.from_pem(Path(path).read_bytes(), passphrase)

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key, for a party's own saved state (never sent anywhere)."""
        return self._key.private_bytes_raw()

    @classmethod
    def from_private_bytes(cls, party: PartyId, raw: bytes) -> Identity:
        try:
            return cls(party, Ed25519PrivateKey.from_private_bytes(bytes(raw)))
        except ValueError:
            raise ProtocolError(f"{party}: saved identity key is not 32 bytes") from None

    def __repr__(self) -> str:
        return f"Identity({self.party}, public={self.public_key.hex()[:16]}...)"


class Directory(JsonRecord, Mapping[PartyId, bytes]):
    """The pinned public identities of a federation: party -> raw 32-byte Ed25519 public key (the mapping),
    plus each party's static X25519 agreement key (`agreement_key`).

    Clients must be client/0 ... client/(n-1), helpers helper/1 ... helper/(K-1); at most one key
    holder. Immutable once built; its fingerprint (SHA-256 of the canonical JSON) names it.
    """

    record = "directory"

    def __init__(self, entries: Mapping[PartyId | str, tuple[bytes, bytes]]):
        table: dict[PartyId, bytes] = {}
        agree: dict[PartyId, bytes] = {}
        for party, keys in entries.items():
            party = party if isinstance(party, PartyId) else PartyId.parse(party)
            if party.role in (Role.SERVER, Role.LEADER):
                raise ConfigError(f"directory: {party} does not sign anything and has no identity entry")
            if not isinstance(keys, tuple) or len(keys) != 2:
                raise ConfigError(f"directory: {party} needs (signing key, agreement key)")
            sign, dh = (bytes(k) if isinstance(k, (bytes, bytearray)) else None for k in keys)
            if sign is None or dh is None or len(sign) != PUBLIC_KEY_BYTES or len(dh) != PUBLIC_KEY_BYTES:
                raise ConfigError(f"directory: public keys of {party} must be {PUBLIC_KEY_BYTES} raw bytes each")
            try:
                Ed25519PublicKey.from_public_bytes(sign)
                X25519PublicKey.from_public_bytes(dh)
            except ValueError:
                raise ConfigError(f"directory: public keys of {party} are not Ed25519/X25519 keys") from None
            table[party], agree[party] = sign, dh
        self._check_indices(table, Role.CLIENT, 0)
        self._check_indices(table, Role.HELPER, 1)
        if len(set(table.values()) | set(agree.values())) != 2 * len(table):
            raise ConfigError("directory: two parties share a public key")
        self._table = dict(sorted(table.items()))
        self._agree = dict(sorted(agree.items()))
        self._fingerprint = hashlib.sha256(self.to_json().encode()).digest()
        self._clients = sum(p.role == Role.CLIENT for p in self._table)  # counted once: read by every party

    @staticmethod
    def _check_indices(table: Mapping[PartyId, bytes], role: Role, first: int) -> None:
        got = sorted(p.index for p in table if p.role == role)
        if got != list(range(first, first + len(got))):
            name = role.name.lower()
            raise ConfigError(f"directory: {name} indices must be {first}, {first + 1}, ... without gaps, got {got}")

    @classmethod
    def of(cls, identities: Iterable[Identity]) -> Directory:
        """The directory of these parties' public keys."""
        return cls({i.party: (i.public_key, i.agreement_key) for i in identities})

    def __getitem__(self, party: PartyId) -> bytes:
        return self._table[party]

    def __iter__(self) -> Iterator[PartyId]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    @property
    def clients(self) -> int:
        """Number of clients (n): client/0 ... client/(n-1)."""
        return self._clients

    @property
    def helpers(self) -> int:
        """Number of AdditiveSharing helpers (K - 1)."""
        return sum(p.role == Role.HELPER for p in self._table)

    @property
    def has_keyholder(self) -> bool:
        return KEYHOLDER in self._table

    def client_keys(self) -> list[bytes]:
        """The clients' public keys in index order."""
        return [self._table[PartyId.client(i)] for i in range(self.clients)]

    def public_key(self, party: PartyId, who: str = "directory") -> bytes:
        """The pinned key of `party`; ProtocolError when the directory does not list it."""
        key = self._table.get(party)
        if key is None:
            raise ProtocolError(f"{who}: {party} is not in the pinned directory")
        return key

    def agreement_key(self, party: PartyId, who: str = "directory") -> bytes:
        """The pinned static X25519 key of `party` (for Identity.pairwise_key)."""
        self.public_key(party, who)
        return self._agree[party]

    def verify(self, party: PartyId, signature: bytes, message: bytes, who: str) -> None:
        """Check `party`'s signature of `message` against its pinned key; ProtocolError naming it otherwise."""
        key = self.public_key(party, who)
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(bytes(signature), bytes(message))
        except (InvalidSignature, ValueError):
            raise ProtocolError(f"{who}: invalid signature of {party}") from None

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical JSON: equal directories, equal fingerprints."""
        return self._fingerprint

    def to_dict(self) -> dict:
        b64 = base64.b64encode
        return {"format": DIRECTORY_FORMAT,
                "parties": {str(p): {"sign": b64(k).decode(), "agree": b64(self._agree[p]).decode()}
                            for p, k in self._table.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping) -> Directory:
        if not isinstance(data, Mapping) or data.get("format") != DIRECTORY_FORMAT:
            raise ConfigError(f"not a securefl directory (expected format {DIRECTORY_FORMAT!r})")
        parties = data.get("parties")
        if not isinstance(parties, Mapping):
            raise ConfigError("directory: 'parties' must map party names to their base64 public keys")
        try:
            return cls({k: (base64.b64decode(v["sign"], validate=True), base64.b64decode(v["agree"], validate=True))
                        for k, v in parties.items()})
        except (TypeError, ValueError, KeyError) as e:
            raise ConfigError(f"directory: bad entry: {e!r}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Directory) and other._fingerprint == self._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        return (f"Directory({self.clients} clients, {self.helpers} helpers, "
                f"keyholder={self.has_keyholder}, fingerprint={self._fingerprint.hex()[:16]})")


def create_identities(clients: int, helpers: int = 0, keyholder: bool = False) -> dict[PartyId, Identity]:
    """Fresh identities for client/0..n-1, helper/1..helpers and optionally the key holder."""
    if clients < 1 or helpers < 0:
        raise ConfigError(f"a federation needs >= 1 client and >= 0 helpers, got {clients}, {helpers}")
    parties = [PartyId.client(i) for i in range(clients)] + [PartyId.helper(j) for j in range(1, helpers + 1)]
    parties += [KEYHOLDER] if keyholder else []
    return {p: Identity.generate(p) for p in parties}


def save_federation(identities: Mapping[PartyId, Identity], folder: str | os.PathLike,
                    passphrase: bytes | str | None = None) -> Directory:
    """Write folder/directory.json and folder/<party>.pem for every identity; return the directory."""
    folder = Path(folder)
    directory = Directory.of(identities.values())
    for ident in identities.values():
        ident.save(folder / _file_name(ident.party), passphrase)
    directory.save(folder / "directory.json")
    return directory


def identity_path(folder: str | os.PathLike, party: PartyId | str) -> Path:
    """Where save_federation writes `party`'s key."""
    party = party if isinstance(party, PartyId) else PartyId.parse(party)
    return Path(folder) / _file_name(party)
