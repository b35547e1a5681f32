"""What securefl puts into Flower messages, and how a Flower model (an ArrayRecord) maps onto a ModelSpec.

A securefl stage message carries two records next to whatever the strategy sent: a ConfigRecord
`securefl.meta` (small public metadata: the stage name, the weight key) and an ArrayRecord
`securefl.payload` holding the party's bytes as one uint8 Array with its own stype, which Flower
chunks for transport and hands back byte for byte (no numpy deserialisation, no pickle).

A Flower model is an ArrayRecord; the round configuration's ModelSpec is securefl's view of it. The
two are matched by position (a state_dict's names, or the legacy API's "0", "1", ...), and every
tensor's shape and dtype is checked by the codec's Layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from securefl.codec import Layout
from securefl.errors import InputError, ProtocolError
from securefl.session import ModelSpec

if TYPE_CHECKING:  # torch loads where a model is handled: a deployment's process for a stage without one never does
    import torch

META = "securefl.meta"
PAYLOAD = "securefl.payload"
STATE = "securefl.state"
BYTES_STYPE = "securefl.bytes"
_PAYLOAD_ENTRY = "bytes"


def payload_record(data: bytes) -> ArrayRecord:
    """One party message as an ArrayRecord (a uint8 Array, chunked by Flower, returned byte for byte)."""
    data = bytes(data)
    return ArrayRecord({_PAYLOAD_ENTRY: Array(dtype="uint8", shape=(len(data),), stype=BYTES_STYPE, data=data)})


def payload_bytes(content: RecordDict, who: str) -> bytes:
    """The party message a securefl Flower message carries; ProtocolError naming `who` when it is malformed."""
    rec = content.array_records.get(PAYLOAD)
    if rec is None:
        raise ProtocolError(f"{who}: message without a securefl payload")
    if list(rec.keys()) != [_PAYLOAD_ENTRY]:
        raise ProtocolError(f"{who}: securefl payload record holds {list(rec.keys())[:3]}, expected one entry")
    arr = rec[_PAYLOAD_ENTRY]
    data = arr.data
    if arr.stype != BYTES_STYPE or arr.dtype != "uint8" or tuple(arr.shape) != (len(data),):
        raise ProtocolError(f"{who}: securefl payload is not a byte string (stype {arr.stype!r}, dtype {arr.dtype!r})")
    return bytes(data)


def stage_content(stage: str, data: bytes, extra: Mapping[str, object] | None = None,
                  base: RecordDict | None = None) -> RecordDict:
    """A securefl message's content: `base`'s records (the strategy's instruction at the input stage, or a
    reply's clear records), the stage metadata (`extra`: the configuration's fingerprint on the server's
    messages, ...) and the payload. A new RecordDict each time (a strategy shares one instruction
    RecordDict among all its messages)."""
    rd = RecordDict(dict(base.items()) if base is not None else {})
    rd[META] = ConfigRecord({"stage": stage, **(extra or {})})
    rd[PAYLOAD] = payload_record(data)
    return rd


def meta_of(content: RecordDict) -> ConfigRecord | None:
    """The securefl metadata of a message (None: not a securefl message)."""
    return content.config_records.get(META)


def user_records(content: RecordDict) -> RecordDict:
    """The records that are not securefl's (what the user's functions and the strategy see)."""
    return RecordDict({k: v for k, v in content.items() if k not in (META, PAYLOAD)})


def only_array_record(content: RecordDict, what: str) -> tuple[str, ArrayRecord]:
    """The one ArrayRecord (the model) of a train instruction or reply, with its key."""
    recs = list(content.array_records.items())
    if len(recs) != 1:
        raise InputError(f"{what}: securefl needs exactly one ArrayRecord (the model), got {len(recs)}: "
                         f"{[k for k, _ in recs][:5]}")
    return recs[0]


def _dtype_name(dtype: str) -> str:
    import torch

    return str(torch.from_numpy(np.zeros(0, np.dtype(dtype))).dtype).removeprefix("torch.")


def spec_of_arrays(arrays: ArrayRecord) -> ModelSpec:
    """The ModelSpec of a Flower model: a mapping of the record's names to tensors of its shapes and dtypes."""
    names = list(arrays.keys())
    if not names:
        raise InputError("the model ArrayRecord holds no arrays")
    tensors = tuple((n, tuple(int(x) for x in a.shape), _dtype_name(a.dtype)) for n, a in arrays.items())
    return ModelSpec("mapping", tuple(names), tensors)


def structure(tensors: list[torch.Tensor], layout: Layout) -> object:
    """Tensors in layout order, arranged as the layout's structure (what the codec's Layout.flatten takes)."""
    if layout.kind == "tensor":
        return tensors[0]
    if layout.kind == "mapping":
        return dict(zip(layout.keys, tensors, strict=True))
    return tuple(tensors) if layout.kind == "tuple" else list(tensors)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    import torch

    return torch.empty(0, dtype=dtype).numpy().dtype


def model_tensors(arrays: ArrayRecord, layout: Layout, what: str) -> list[torch.Tensor]:
    """The record's arrays, matched to the layout by position, as tensors (copies) of the configured dtypes.

    Flower's averaging and server optimisers (FedAdam, ...) turn integer arrays into floats, so a float
    array where the configuration has an integer tensor is taken to its nearest integers; a float of
    another width is cast. Anything else is an InputError naming the tensor.
    """
    import torch

    if len(arrays) != len(layout.specs):
        raise InputError(f"{what}: the model has {len(arrays)} arrays, the round configuration {len(layout.specs)}")
    out = []
    for spec, a in zip(layout.specs, arrays.values(), strict=True):
        x = np.array(a.numpy())
        if spec.dtype == torch.bfloat16:
            raise InputError(f"{what}: tensor {spec.name!r} is bfloat16, which Flower's arrays cannot carry")
        want = _numpy_dtype(spec.dtype)
        if x.dtype != want:
            if spec.is_int and x.dtype.kind == "f" and np.isfinite(x).all():
                x = np.rint(x)
            elif spec.is_int or x.dtype.kind != "f":
                raise InputError(f"{what}: tensor {spec.name!r} is {x.dtype}, the round configuration says {want}")
            x = np.asarray(x, dtype=want)
        if tuple(x.shape) != spec.shape:
            raise InputError(f"{what}: tensor {spec.name!r} has shape {tuple(x.shape)}, expected {spec.shape}")
        out.append(torch.from_numpy(x))
    return out


def record_structure(arrays: ArrayRecord, layout: Layout, what: str) -> object:
    """The record's arrays as tensors of the configured dtypes, in the layout's structure."""
    return structure(model_tensors(arrays, layout, what), layout)


def model_delta(new: ArrayRecord, start: ArrayRecord, layout: Layout, what: str) -> object:
    """new - start, tensor by tensor, in the configured dtypes, as the layout's structure (the client's update)."""
    if list(new.keys()) != list(start.keys()):
        raise InputError(f"{what}: the trained model's arrays {list(new.keys())[:5]} are not the global model's "
                         f"{list(start.keys())[:5]}")
    import torch

    deltas = []
    for spec, a, b in zip(layout.specs, model_tensors(new, layout, what), model_tensors(start, layout, what),
                          strict=True):
        if a.dtype == torch.bool:
            raise InputError(f"{what}: tensor {spec.name!r} is boolean: a difference of booleans is not an update")
        deltas.append(a - b)
    return structure(deltas, layout)


def apply_mean(start: ArrayRecord, mean: object, layout: Layout) -> ArrayRecord:
    """start + mean (the aggregated update, in the layout's structure) as a new ArrayRecord with start's names and
    dtypes (as the strategy holds them), each sum taken in that dtype as the in-process loop does."""
    import torch

    out = {}
    for (name, a), t in zip(start.items(), layout.check(mean, 0), strict=True):
        base = torch.from_numpy(np.array(a.numpy()))
        out[name] = Array((base + t.to(base.dtype)).numpy())
    return ArrayRecord(out)
