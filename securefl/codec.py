"""Tensors <-> flat vectors, and fixed-point encoding into a power-of-two ring.

An update (a tensor, a list/tuple of tensors, or a name -> tensor mapping) is flattened into
one float vector (all floating tensors) and one int64 vector (all integer tensors), with a
Layout that restores names, shapes, dtypes and devices. Ring schemes then encode a client's
vectors as ``[floats..., ints..., weight]`` in Z_{2^b}:

* floats: clipped to [-clip, clip], multiplied by the client's normalised weight
  (weight / weight_bound, in [0, 1]), scaled by 2^frac_bits and stochastically rounded;
* ints: exact, unweighted (integer tensors are summed exactly; their mean is the sum over the
  included clients divided by their number, rounded to the nearest integer);
* weight: the normalised weight, scaled by 2^frac_bits and stochastically rounded, so the
  weight sum is aggregated (and hidden) like everything else.

The ring width is 32 bits whenever the sum fits, else 64; if 64 bits cannot hold it, choosing
the parameters raises ConfigError before any cryptography runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from securefl.errors import ConfigError, InputError, StructureError

if TYPE_CHECKING:
    import torch

# torch and the Numba kernels load on first use (an update to encode means torch is already loaded):
# `import securefl` and building an aggregator stay light.


@functools.cache
def float_dtypes() -> tuple[torch.dtype, ...]:
    """The floating dtypes an update may hold (averaged)."""
    import torch

    return (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@functools.cache
def int_dtypes() -> tuple[torch.dtype, ...]:
    """The integer dtypes an update may hold (summed exactly)."""
    import torch

    return (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@dataclass(frozen=True)
class TensorSpec:
    """Where one tensor lives in the flat vectors and how to rebuild it."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    offset: int
    numel: int

    @property
    def is_int(self) -> bool:
        return self.dtype in int_dtypes()


@dataclass(frozen=True)
class Flat:
    """One client's update as flat vectors: floats (float32 or float64) and ints (int64)."""

    floats: np.ndarray
    ints: np.ndarray


def _entries(update: object, client: int) -> tuple[str, list[tuple[object, torch.Tensor]]]:
    """The structure kind and its (key, tensor) entries in order."""
    import torch

    if isinstance(update, torch.Tensor):
        return "tensor", [(None, update)]
    if isinstance(update, Mapping):
        items = list(update.items())
        kind = "mapping"
    elif isinstance(update, (list, tuple)):
        items = list(enumerate(update))
        kind = type(update).__name__
    else:
        raise InputError(
            f"client {client}: an update must be a tensor, a list/tuple of tensors or a mapping "
            f"name -> tensor, got {type(update).__name__}"
        )
    for key, t in items:
        if not isinstance(t, torch.Tensor):
            raise InputError(f"client {client}: entry {key!r} is {type(t).__name__}, not a torch.Tensor")
    return kind, items


def _name(kind: str, key: object) -> str:
    return "tensor" if kind == "tensor" else (str(key) if kind == "mapping" else f"[{key}]")


@dataclass(frozen=True)
class Layout:
    """The structure shared by all clients' updates."""

    kind: str
    keys: tuple
    specs: tuple[TensorSpec, ...]
    float_dtype: np.dtype
    float_size: int
    int_size: int

    @classmethod
    def of(cls, update: object, client: int = 0) -> Layout:
        """The layout of one update (client's index used in error messages)."""
        kind, items = _entries(update, client)
        if not items:
            raise InputError(f"client {client}: the update holds no tensors")
        specs, f_off, i_off, wide = [], 0, 0, False
        for key, t in items:
            name = _name(kind, key)
            if t.dtype in float_dtypes():
                off, f_off = f_off, f_off + t.numel()
                wide |= t.dtype == float_dtypes()[3]
            elif t.dtype in int_dtypes():
                off, i_off = i_off, i_off + t.numel()
            else:
                raise InputError(f"client {client}: tensor {name!r} has unsupported dtype {t.dtype}")
            specs.append(TensorSpec(name, tuple(t.shape), t.dtype, t.device, off, t.numel()))
        return cls(
            kind,
            tuple(k for k, _ in items),
            tuple(specs),
            np.dtype(np.float64 if wide else np.float32),
            f_off,
            i_off,
        )

    def check(self, update: object, client: int) -> list[torch.Tensor]:
        """The update's tensors in layout order; raise StructureError on any mismatch."""
        kind, items = _entries(update, client)
        if kind != self.kind:
            raise StructureError(f"client {client}: update is a {kind}, expected a {self.kind}")
        keys = tuple(k for k, _ in items)
        if keys != self.keys:
            if self.kind == "mapping":
                missing = [k for k in self.keys if k not in set(keys)]
                extra = [k for k in keys if k not in set(self.keys)]
                if missing or extra:
                    raise StructureError(
                        f"client {client}: missing tensors {missing[:5]}, unexpected tensors {extra[:5]}"
                    )
                items = [(k, update[k]) for k in self.keys]
            else:
                raise StructureError(f"client {client}: {len(keys)} tensors, expected {len(self.keys)}")
        tensors = []
        for spec, (_, t) in zip(self.specs, items, strict=True):
            if tuple(t.shape) != spec.shape:
                raise StructureError(
                    f"client {client}: tensor {spec.name!r} has shape {tuple(t.shape)}, expected {spec.shape}"
                )
            if t.dtype != spec.dtype:
                raise StructureError(
                    f"client {client}: tensor {spec.name!r} has dtype {t.dtype}, expected {spec.dtype}"
                )
            tensors.append(t)
        return tensors

    def flatten(self, update: object, client: int) -> Flat:
        """Flatten and validate one client's update: structure, NaN/Inf."""
        tensors = self.check(update, client)
        import torch

        ftype = torch.float64 if self.float_dtype == np.float64 else torch.float32
        fl = [t.detach().reshape(-1) for t, s in zip(tensors, self.specs, strict=True) if not s.is_int]
        il = [t.detach().reshape(-1) for t, s in zip(tensors, self.specs, strict=True) if s.is_int]
        floats = _cat(fl, ftype, self.float_dtype)
        ints = _cat(il, torch.int64, np.dtype(np.int64))
        if floats.size and not np.isfinite(floats).all():
            spec = next(
                s for s in self.specs if not s.is_int and not np.isfinite(floats[s.offset : s.offset + s.numel]).all()
            )
            raise InputError(f"client {client}: tensor {spec.name!r} contains NaN or Inf")
        return Flat(floats, ints)

    def int_spec_at(self, index: int) -> TensorSpec:
        """The integer tensor holding element `index` of the int vector."""
        return next(s for s in self.specs if s.is_int and s.offset <= index < s.offset + s.numel)

    def unflatten(self, floats: np.ndarray, ints: np.ndarray, int_dtype: torch.dtype | None = None) -> object:
        """Rebuild the structure from float64 / int64 vectors, with each tensor's dtype and device.

        int_dtype, when given, replaces the dtype of integer tensors (sums are widened to int64).
        """
        import torch

        fvec = torch.from_numpy(np.ascontiguousarray(floats, dtype=np.float64))
        ivec = torch.from_numpy(np.ascontiguousarray(ints, dtype=np.int64))
        out = []
        for s in self.specs:
            src = ivec if s.is_int else fvec
            t = src[s.offset : s.offset + s.numel].reshape(s.shape)
            dtype = (int_dtype or s.dtype) if s.is_int else s.dtype
            out.append(t.to(device=s.device, dtype=dtype, copy=True))
        if self.kind == "tensor":
            return out[0]
        if self.kind == "mapping":
            return dict(zip(self.keys, out, strict=True))
        return tuple(out) if self.kind == "tuple" else out


def _cat(parts: list[torch.Tensor], ttype: torch.dtype, ntype: np.dtype) -> np.ndarray:
    if not parts:
        return np.zeros(0, ntype)
    if len(parts) == 1 and parts[0].device.type == "cpu" and parts[0].dtype == ttype:
        return parts[0].numpy()
    import torch

    return torch.cat([p.to("cpu", ttype) for p in parts]).numpy()


def flatten_all(updates: Sequence[object]) -> tuple[Layout, list[Flat]]:
    """Layout of the first update and every update flattened against it."""
    import torch

    if isinstance(updates, (torch.Tensor, Mapping)) or not isinstance(updates, Sequence):
        raise InputError("updates must be a sequence with one entry per client")
    if len(updates) == 0:
        raise InputError("updates is empty: no client to aggregate")
    layout = Layout.of(updates[0], 0)
    return layout, [layout.flatten(u, i) for i, u in enumerate(updates)]


def _bits_for(magnitude: float) -> int:
    """Ring bits so that any sum of absolute value <= magnitude fits as two's complement."""
    return max(1, math.ceil(math.log2(magnitude + 1))) + 1


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point parameters shared by all parties of a round (all public)."""

    clip: float
    frac_bits: int
    ring_bits: int
    int_bound: int

    @classmethod
    def choose(
        cls,
        n_clients: int,
        *,
        clip: float,
        frac_bits: int,
        int_bound: int,
        noise_bound: float = 0.0,
    ) -> FixedPoint:
        """Smallest ring (32 or 64 bits) that holds the sum of n_clients encoded updates.

        noise_bound: the largest absolute value, in ring units, that noise added inside the ring
        can contribute to any sum coordinate (distributed DP).
        """
        if not (clip > 0 and math.isfinite(clip)):
            raise ConfigError(f"clip must be a positive finite number, got {clip}")
        if not 0 <= frac_bits <= 52:
            raise ConfigError(f"frac_bits must be in [0, 52], got {frac_bits}")
        if int_bound < 0:
            raise ConfigError(f"int_bound must be >= 0, got {int_bound}")
        scale = 2.0**frac_bits
        need = max(
            n_clients * (clip * scale + 1) + noise_bound,  # floats (normalised weight <= 1)
            n_clients * (scale + 1),  # the weight slot
            n_clients * int_bound,  # exact integers
        )
        bits = _bits_for(need)
        for ring in (32, 64):
            if bits <= ring:
                return cls(float(clip), int(frac_bits), ring, int(int_bound))
        raise ConfigError(
            f"the sum of {n_clients} clients needs a {bits}-bit ring, more than 64: lower frac_bits "
            f"(now {frac_bits}) or clip (now {clip}), lower int_bound (now {int_bound}), "
            "or aggregate fewer clients per round"
        )

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32 if self.ring_bits == 32 else np.uint64)

    @property
    def signed(self) -> np.dtype:
        return np.dtype(np.int32 if self.ring_bits == 32 else np.int64)

    @property
    def scale(self) -> float:
        return 2.0**self.frac_bits

    def length(self, layout: Layout) -> int:
        """Ring vector length: floats, ints, and one weight slot."""
        return layout.float_size + layout.int_size + 1

    def encode(
        self,
        flat: Flat,
        weight: float,
        rng: np.random.Generator,
        layout: Layout,
        client: int,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, int]:
        """Encode one client's update weighted by `weight` in [0, 1]; return (ring vector, clipped count)."""
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"client {client}: normalised weight {weight} outside [0, 1]")
        nf, ni = flat.floats.size, flat.ints.size
        if out is None:
            out = np.empty(nf + ni + 1, self.dtype)
        signed = out.view(self.signed)
        u = rng.random(nf + 1)
        from securefl._kernels import encode_fixed

        clipped = encode_fixed(flat.floats, u[:nf], self.clip, weight * self.scale, signed[:nf])
        if ni:
            self.check_ints(flat, layout, client)
            signed[nf : nf + ni] = flat.ints
        encode_fixed(np.array([weight]), u[nf:], 1.0, self.scale, signed[nf + ni :])
        return out, int(clipped)

    def check_ints(self, flat: Flat, layout: Layout, client: int) -> None:
        """InputError naming the tensor when an integer value exceeds int_bound (never clipped or wrapped)."""
        from securefl._kernels import first_out_of_range

        bad = first_out_of_range(flat.ints, self.int_bound) if flat.ints.size else -1
        if bad >= 0:
            spec = layout.int_spec_at(bad)
            raise InputError(
                f"client {client}: integer tensor {spec.name!r} holds {flat.ints[bad]}, beyond "
                f"int_bound={self.int_bound}; raise int_bound"
            )

    def decode(self, ring_sum: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray, float]:
        """Ring sum -> (sum of weighted floats, exact int sum, sum of normalised weights)."""
        signed = ring_sum.view(self.signed)
        nf, ni = layout.float_size, layout.int_size
        floats = signed[:nf].astype(np.float64)
        floats /= self.scale
        return floats, signed[nf : nf + ni].astype(np.int64), float(signed[nf + ni]) / self.scale

    def sum_error_bound(self, n_clients: int) -> float:
        """Largest |decoded - true| per coordinate of the (normalised) weighted sum from rounding."""
        return n_clients / self.scale
