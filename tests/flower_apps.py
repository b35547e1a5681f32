"""A small Flower app for the securefl Flower tests (in-process grid, Ray simulation, real processes).

Node with partition-id i trains by adding a known delta to the global model (round r: delta(i, r)) and
reports num-examples = 10 + i, so the exact expected aggregate is known. The model holds float32
tensors and an int64 counter, the case of a BatchNorm state_dict. Its train function counts its
own calls in Context.state (the user's records, next to securefl's). Run config `fail` ("i:stage"
or "i:stage:round", ';'-separated) makes node i raise when it gets that securefl stage's message;
`hang` (same form) makes it sleep `hang-seconds`, past the stage's deadline. run_simulation has no run
config: there the environment variables SECUREFL_TEST_FAIL, _HANG and _HANG_SECONDS say the same.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import securefl
from securefl.flower import secure_mod, simulation_resolver
from securefl.flower.records import meta_of, payload_bytes
from securefl.wire import peek

SHAPES = {"w": ((5, 3), np.float32), "b": ((3,), np.float32), "steps": ((), np.int64)}
CLIP = 1.0  # the tests' round configurations clip values to [-1, 1]; client 3's update has one beyond it
WEIGHT_BOUND = 100.0
AGGREGATORS = {  # scheme -> a factory of its aggregator (keywords: weight_bound, dp for the in-process runs)
    "plaintext": lambda **kw: securefl.Plaintext(clip=CLIP, **kw),
    "additive": lambda **kw: securefl.AdditiveSharing(num_aggregators=3, clip=CLIP, **kw),
    "secagg": lambda **kw: securefl.SecAgg(threshold=0.6, clip=CLIP, **kw),
    "ckks": lambda **kw: securefl.CKKS(clip=CLIP, **kw),
    "paillier": lambda **kw: securefl.Paillier(clip=CLIP, **kw),
}


def initial_arrays() -> ArrayRecord:
    return ArrayRecord({k: Array(np.full(s, 0.5, dtype=t)) for k, (s, t) in SHAPES.items()})


def delta(i: int, rnd: int) -> dict[str, np.ndarray]:
    """Partition i's update in round rnd (floats in about [-1.5, 1.5], one beyond the clip of 1 for i == 3)."""
    g = np.random.default_rng([i, rnd])
    out = {k: (g.uniform(-1, 1, s) * (1 + 0.1 * i)).astype(t) if t != np.int64 else np.asarray(i + rnd, t)
           for k, (s, t) in SHAPES.items()}
    if i == 3:
        out["w"][0, 0] = 1.25
    return out


def weight(i: int) -> int:
    return 10 + i


def torch_update(i: int, rnd: int) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v)) for k, v in delta(i, rnd).items()}


def _stage_rules(context: Context, key: str) -> list[tuple[int, str, int | None]]:
    text = str(context.run_config.get(key, os.environ.get(f"SECUREFL_TEST_{key.upper()}", "")))
    rules = []
    for part in filter(None, text.split(";")):
        i, stage, *rnd = part.split(":")
        rules.append((int(i), stage, int(rnd[0]) if rnd else None))
    return rules


def fault_mod(msg: Message, context: Context, call_next):  # noqa: ANN001, ANN201
    """Outermost mod: make the node fail or hang at the securefl stages its run config names."""
    meta = meta_of(msg.content)
    if meta is not None:
        me = int(context.node_config["partition-id"])
        stage = str(meta["stage"])
        rnd = None if stage == "securefl.hello" else peek(payload_bytes(msg.content, "test")).round
        for key in ("fail", "hang"):
            for i, want, r in _stage_rules(context, key):
                if (i, stage) == (me, want) and (r is None or r == rnd):
                    if key == "fail":
                        raise RuntimeError(f"partition {me} fails at {stage}")
                    time.sleep(float(context.run_config.get("hang-seconds",
                                                            os.environ.get("SECUREFL_TEST_HANG_SECONDS", 30))))
    return call_next(msg, context)


def train(msg: Message, context: Context) -> Message:
    i = int(context.node_config["partition-id"])
    rnd = int(msg.content["config"]["server-round"])
    calls = context.state.metric_records.get("user", MetricRecord({"train-calls": 0}))
    calls["train-calls"] = int(calls["train-calls"]) + 1
    context.state["user"] = calls
    d = delta(i, rnd)
    arrays = {k: Array(np.asarray(a.numpy() + d[k], a.numpy().dtype)) for k, a in msg.content["arrays"].items()}
    metrics = MetricRecord({"num-examples": weight(i), "loss": float(i), "train-calls": int(calls["train-calls"])})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    i = int(context.node_config["partition-id"])
    w = msg.content["arrays"]["w"].numpy()
    return Message(RecordDict({"metrics": MetricRecord({"num-examples": weight(i), "w-sum": float(w.sum())})}),
                   reply_to=msg)


def make_app(folder: str | None, *, secure: bool = True) -> ClientApp:
    """The test ClientApp: securefl's mod (keys from the federation in `folder`) unless secure=False."""
    mods = [fault_mod, secure_mod(simulation_resolver(folder))] if secure else [fault_mod]
    app = ClientApp(mods=mods)
    app.train()(train)
    app.evaluate()(evaluate)
    return app


# ---------------------------------------------------------------- what a round should give


def flat(arrays: ArrayRecord) -> np.ndarray:
    """A model as one float64 vector (tensors in order)."""
    return np.concatenate([np.asarray(a.numpy(), np.float64).ravel() for a in arrays.values()])


def in_process(agg, rnd: int, clients, dropped=None):  # noqa: ANN001, ANN201
    """The in-process aggregate of the same round: the scheme's own simulation over the same updates."""
    return agg.aggregate([torch_update(i, rnd) for i in clients], weights=[weight(i) for i in clients],
                         dropped=dropped)


def exact_mean(rnd: int, included, clip: float = CLIP) -> np.ndarray:
    """float64 weighted mean of the clipped float deltas and the rounded mean of the integer ones."""
    w = np.array([weight(i) for i in included], np.float64)
    parts = []
    for k, (_, t) in SHAPES.items():
        xs = [np.asarray(delta(i, rnd)[k], np.float64) for i in included]
        if t == np.int64:
            parts.append(np.floor((2 * sum(xs) + len(xs)) / (2 * len(xs))).ravel())
        else:
            parts.append((sum(wi * np.clip(x, -clip, clip) for wi, x in zip(w, xs, strict=True)) / w.sum()).ravel())
    return np.concatenate(parts)


def tolerance(included, bound: float = WEIGHT_BOUND, frac_bits: int = 16, clip: float = CLIP) -> float:
    """The rounding bound of one round's mean (< 1 unit of 2^-frac_bits per client and value, the weight slot
    included: weights travel divided by the bound), plus float32 storage of the model (values up to about 4)."""
    k, ulp = len(included), 2.0**-frac_bits
    wnorm = sum(weight(i) for i in included) / bound
    return (1 + clip) * k * ulp / (wnorm - k * ulp) + 4e-7
