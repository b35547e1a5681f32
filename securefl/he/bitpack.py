"""Fixed-width bit packing of uint64 rows: `per` values of `bits` bits each (bits <= 62) into 64-bit words.
Paillier packs ring slots into plaintexts with it, CKKS packs ciphertext coefficients (each below a prime of
`bits` bits) into its wire format.

g = 64 / gcd(64, bits) values fill exactly g * bits / 64 words, so every group of g values has the same layout:
position j of a group goes to word (j * bits) // 64 at shift (j * bits) % 64, spilling into the next word when
it crosses a boundary. Two orders of the values in a row:

* natural (pack, unpack; numpy): value i at bits [i * bits, (i + 1) * bits) of the row read as one
  little-endian integer, what a Paillier plaintext's slots need; 2 g whole-array shifts and ORs, one per
  position of a group;
* planar (pack_planar, add_planar; numba, one pass): per a multiple of g, value j * groups + k is position j
  of group k and word w of group k is word w * groups + k, so each position is a contiguous run: the fast
  order for a wire format, unpacked straight into a sum.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from securefl.errors import ConfigError

MAX_BITS = 62  # a value shifted by up to 63 bits spills into at most one more word


def words(bits: int, per: int) -> int:
    """64-bit words that `per` values of `bits` bits take."""
    return -(-per * bits // 64)


def _group(bits: int, per: int, planar: bool = False) -> tuple[int, int, int]:
    """(values, words) of one group and the number of groups in a row."""
    if not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"bit width {bits} outside [1, {MAX_BITS}]")
    g = 64 // math.gcd(64, bits)
    if planar and per % g:
        raise ConfigError(f"planar packing of {bits}-bit values needs rows of a multiple of {g}, not {per}")
    return g, g * bits // 64, -(-per // g)


def _positions(a: np.ndarray, size: int, groups: int) -> np.ndarray:
    """A (size, rows, groups) view of natural-order (rows, groups * size) data: position first."""
    return a.reshape(a.shape[0], groups, size).transpose(2, 0, 1)


def pack(u: np.ndarray, bits: int) -> np.ndarray:
    """(rows, per) values below 2^bits -> (rows, words(bits, per)) uint64 words, natural order."""
    rows, per = u.shape
    g, wg, groups = _group(bits, per)
    padded = u if per == g * groups else np.zeros((rows, g * groups), np.uint64)
    if padded is not u:
        padded[:, :per] = u
    v = _positions(padded, g, groups)
    out = np.zeros((rows, wg * groups), np.uint64)
    o = _positions(out, wg, groups)
    for j in range(g):
        w, s = divmod(j * bits, 64)
        o[w] |= v[j] << np.uint64(s)
        if s + bits > 64:
            o[w + 1] |= v[j] >> np.uint64(64 - s)
    return out[:, : words(bits, per)]


def unpack(w: np.ndarray, bits: int, per: int) -> np.ndarray:
    """Inverse of pack: (rows, words(bits, per)) uint64 words -> (rows, per) values."""
    rows = w.shape[0]
    g, wg, groups = _group(bits, per)
    padded = w if w.shape[1] == wg * groups else np.zeros((rows, wg * groups), np.uint64)
    if padded is not w:
        padded[:, : w.shape[1]] = w
    ws = _positions(padded, wg, groups)
    out = np.empty((rows, g * groups), np.uint64)
    o = _positions(out, g, groups)
    mask = np.uint64((1 << bits) - 1)
    for j in range(g):
        i, s = divmod(j * bits, 64)
        x = ws[i] >> np.uint64(s)
        if s + bits > 64:
            x |= ws[i + 1] << np.uint64(64 - s)
        np.bitwise_and(x, mask, out=o[j])
    return out[:, :per]


@njit(cache=True, nogil=True)
def _pack_planar(u, bits, g, groups, out):  # pragma: no cover - compiled
    """out (zeros) |= the planar words of u."""
    for r in range(u.shape[0]):
        for j in range(g):
            i = (j * bits) // 64
            s = np.uint64((j * bits) % 64)
            spill = (j * bits) % 64 + bits > 64
            back = np.uint64(64) - s
            for k in range(groups):
                x = u[r, j * groups + k]
                out[r, i * groups + k] |= x << s
                if spill:
                    out[r, (i + 1) * groups + k] |= x >> back


def pack_planar(u: np.ndarray, bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """(rows, per) values below 2^bits -> (rows, words(bits, per)) uint64 words, planar order (into `out`, any
    (rows, words) view, when given)."""
    g, wg, groups = _group(bits, u.shape[1], planar=True)
    if out is None:
        out = np.zeros((u.shape[0], wg * groups), np.uint64)
    else:
        out[...] = 0
    _pack_planar(u, bits, g, groups, out)
    return out


@njit(cache=True, nogil=True)
def _add_planar(w, bits, g, groups, acc, bound, negate):  # pragma: no cover - compiled
    """acc[r, j * groups + k] += (or -=, negate) position j of group k of row r of planar words w (uint64
    arithmetic: adding and then subtracting the same words restores acc exactly); False if a value >= bound."""
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    ok = True
    for r in range(w.shape[0]):
        for j in range(g):
            i = (j * bits) // 64
            s = np.uint64((j * bits) % 64)
            spill = (j * bits) % 64 + bits > 64
            back = np.uint64(64) - s
            for k in range(groups):
                x = w[r, i * groups + k] >> s
                if spill:
                    x |= w[r, (i + 1) * groups + k] << back
                x &= mask
                if x >= bound:
                    ok = False
                if negate:
                    acc[r, j * groups + k] -= x
                else:
                    acc[r, j * groups + k] += x
    return ok


def add_planar(w: np.ndarray, bits: int, acc: np.ndarray, bound: int, negate: bool = False) -> bool:
    """Unpack planar words (rows, words(bits, per)) and add (negate: subtract) every value into acc (rows, per) in
    one pass; False when some value is >= bound (all were added all the same: negate=True undoes it)."""
    g, _, groups = _group(bits, acc.shape[1], planar=True)
    return bool(_add_planar(w, bits, g, groups, acc, np.uint64(bound), negate))
