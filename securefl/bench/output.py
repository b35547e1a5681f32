"""Benchmark outputs: machine description, JSON, a markdown table and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from securefl import schemes

LIBRARIES = ("securefl", "numpy", "torch", "numba", "cryptography", "tenseal", "phe", "gmpy2", "flwr",
             "dp-accounting", "matplotlib")
HEADERS = ("scheme", "DP", "n", "m", "drop", "client s", "aggregators s", "client sent", "B/param",
           "x plain client s", "x plain agg s", "x plain client B", "x no-DP round", "x floor client", "x floor agg",
           "peak MB", "status")
COMPACT = ("scheme", "DP", "n", "m", "drop", "client s", "aggregators s", "B/param", "x plain client s",
           "x plain agg s", "x plain client B", "x no-DP round", "x floor agg", "peak MB", "status")
SPECIAL_HEADERS = ("point", "scheme", "DP", "n", "m", "tensors", "round s", "x plain round", "x no-DP round",
                   "client s", "upload / float32", "aggregators s", "aggregating parties over their floor", "status")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None


def _version(lib: str) -> str | None:
    try:
        return metadata.version(lib)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """CPU model, cores, memory, OS, Python and library versions of the machine running the benchmark."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": {lib: _version(lib) for lib in LIBRARIES},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _g(v: float | None, suffix: str = "") -> str:
    return "-" if v is None else f"{v:.3g}{suffix}"


def _agg_floor(cell: dict) -> float | None:
    vals = [f["x_floor"] for k, f in cell.get("floor", {}).items() if k != "client" and f.get("x_floor") is not None]
    return max(vals) if vals else None


def row(cell: dict, columns: tuple[str, ...] = HEADERS, full_errors: bool = True) -> tuple[str, ...]:
    """One table row of a cell, in `columns` (names from HEADERS)."""
    values = {"scheme": cell["scheme"], "DP": cell["dp"] or "-", "n": str(cell["n"]), "m": str(cell["m"]),
              "drop": f"{cell['dropout']:.0%}"}
    if cell["status"] != "ok":
        values["status"] = f"{cell['status']}: {cell.get('error', '')}" if full_errors else cell["status"]
        return tuple(values.get(c, "-") for c in columns)
    client = cell["parties"].get("client", {})
    ratio = cell.get("ratio", {})
    rc = ratio.get("parties", {}).get("client", {})
    peak = cell.get("peak_memory_bytes")
    values |= {
        "client s": _g(client.get("seconds_per_party")),
        "aggregators s": _g(cell["aggregator_seconds"]),
        "client sent": fmt_bytes(client.get("bytes_sent_per_party")),
        "B/param": _g(cell["bytes_per_param"]),
        "x plain client s": _g(rc.get("seconds_per_party"), "x"),
        "x plain agg s": _g(ratio.get("aggregator_seconds"), "x"),
        "x plain client B": _g(rc.get("bytes_sent_per_party"), "x"),
        "x no-DP round": _g(cell.get("ratio_no_dp", {}).get("wall_s"), "x"),
        "x floor client": _g(cell.get("floor", {}).get("client", {}).get("x_floor"), "x"),
        "x floor agg": _g(_agg_floor(cell), "x"),
        "peak MB": "-" if peak is None else f"{peak / 1e6:.1f}",
        "status": "ok",
    }
    return tuple(values[c] for c in columns)


PEER_HEADERS = ("peer", "point", "n", "m", "round s", "client s", "aggregators s", "B/param", "vs securefl",
                "round s", "client s", "aggregators s", "B/param", "status")
_PEER_KEYS = ("round_s", "client_s", "aggregators_s", "bytes_per_param")


def peer_row(peer: dict) -> tuple[str, ...]:
    """One table row of a peer, its figures and the compared securefl scheme's at the same point."""
    figures, ours = peer.get("figures") or {}, peer.get("securefl") or {}
    status = peer["status"] if peer["status"] == "ok" else f"{peer['status']}: {peer.get('error', '')}"
    return (peer["name"], peer.get("point", "base"), str(peer["n"]), str(peer["m"]),
            *(_g(figures.get(k)) for k in _PEER_KEYS), peer["compare"], *(_g(ours.get(k)) for k in _PEER_KEYS), status)


def _party_floors(cell: dict) -> str:
    """Each aggregating party kind's slowest party over its floor, e.g. "server 1.2x, keyholder 4.9x"."""
    return ", ".join(f"{kind} {_g(f.get('x_floor'), 'x')}" for kind, f in cell.get("floor", {}).items()
                     if kind != "client")


def special_row(point: str, cell: dict) -> tuple[str, ...]:
    """One row of the special-points table: a cell of `point`."""
    values = {"point": point, "scheme": cell["scheme"], "DP": cell["dp"] or "-", "n": str(cell["n"]),
              "m": f"{cell['m']:,}", "tensors": str(cell.get("tensors", 1))}
    if cell["status"] != "ok":
        values["status"] = f"{cell['status']}: {cell.get('error', '')}"
        return tuple(values.get(h, "-") for h in SPECIAL_HEADERS)
    values |= {
        "round s": _g(cell["wall_s"]),
        "x plain round": _g(cell.get("ratio", {}).get("wall_s"), "x"),
        "x no-DP round": _g(cell.get("ratio_no_dp", {}).get("wall_s"), "x"),
        "client s": _g(cell["parties"].get("client", {}).get("seconds_per_party")),
        "upload / float32": _g(cell["bytes_per_param"] / 4, "x"),
        "aggregators s": _g(cell["aggregator_seconds"]),
        "aggregating parties over their floor": _party_floors(cell) or "-",
        "status": "ok",
    }
    return tuple(values[h] for h in SPECIAL_HEADERS)


def special_points(results: dict) -> list[tuple[dict, list[dict]]]:
    """The run's special points that were planned, each with its cells in measuring order."""
    out = []
    for sp in results["config"].get("specials", []):
        cells = [c for c in results["cells"] if sp["name"] in c["sweeps"]]
        if cells:
            out.append((sp, cells))
    return out


def _arm_line(cell: dict) -> str:
    """A cell of a special point in a few words: its round, its ratios, and (beside Plaintext) upload and floors."""
    who = cell["scheme"] + (f" + {cell['dp']} DP" if cell["dp"] else "")
    if cell["status"] != "ok":
        return f"{who} {cell['status']}"
    bits = [f"round {cell['wall_s']:.3g} s"]
    if cell["scheme"] != schemes.BASELINE:
        base = f"{schemes.BASELINE} + {cell['dp']} DP" if cell["dp"] else schemes.BASELINE
        bits.append(f"{_g(cell.get('ratio', {}).get('wall_s'), 'x')} {base}")
    if cell.get("ratio_no_dp"):
        bits.append(f"{_g(cell['ratio_no_dp']['wall_s'], 'x')} the same without DP")
    if cell["scheme"] != schemes.BASELINE:
        bits += [f"client {_g(cell['parties']['client']['seconds_per_party'])} s",
                 f"upload {_g(cell['bytes_per_param'] / 4, 'x')} float32"]
        floors = _party_floors(cell)
        if floors:
            bits.append(f"over floor: {floors}")
    return f"{who}: " + ", ".join(bits)


def point_lines(results: dict) -> list[str]:
    """One line per special point: what it is, its size, and each cell's round, ratios, upload and floors."""
    lines = []
    for sp, cells in special_points(results):
        c = cells[0]
        shape = f" in {c['tensors']} tensors ({sp['model']})" if c.get("model") else ""
        lines.append(f"{sp['name']} [{sp['what']}] n={c['n']}, m={c['m']:,}{shape}: "
                     + "; ".join(_arm_line(cell) for cell in cells))
    return lines


def _md_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(results: dict) -> str:
    """The run as markdown: machine, floors, the matrix, the special points, first-call seconds, the peers."""
    mc, hw, cfg = results["machine"], results["hardware"], results["config"]
    libs = ", ".join(f"{k} {v}" for k, v in mc["libraries"].items() if v)
    parts = [
        f"# securefl bench{' --quick' if cfg['quick'] else ''}",
        f"Machine: {mc['cpu']}, {mc['usable_cores']} usable of {mc['cores']} cores, "
        f"{fmt_bytes(mc['memory_bytes'])} RAM, {mc['platform']}, Python {mc['python']}; {libs}. "
        f"Run on {mc['date']}, {results['wall_s']:.0f} s wall.",
        f"Hardware floor measured in this run: AES-128-CTR {hw['aes_ctr_bytes_per_s'] / 1e9:.2f} GB/s, "
        f"memory {hw['memory_bytes_per_s'] / 1e9:.2f} GB/s (in-place uint32 add, 3 x 4 bytes moved per word).",
        f"Each cell: one warm-up round, then the median of {cfg['repeats']} rounds interleaved across schemes; "
        f"same updates, seed and dropped clients for every scheme at a point. Seconds are per party "
        f"(client: mean over survivors) or summed over the aggregating parties; 'x plain' is the ratio to "
        f"Plaintext at the same point (with the same DP) in this run; 'x no-DP round' a DP cell's round over the "
        f"same scheme's without DP, measured in the same interleaved rounds; 'x floor' is the slowest party's "
        f"seconds over its floor "
        f"(the keystream it must expand and the words it must add at the rates above). Peak memory: "
        f"{results['memory_method']}, whole simulated round.",
        "## Matrix",
        _md_table(HEADERS, [row(c) for c in results["cells"]]),
    ]
    specials = special_points(results)
    if specials:
        parts += ["## Special points",
                  "Each measured like any cell (the same updates for every cell of the point, a warm-up, medians "
                  "of interleaved rounds). 'x plain round': the round over Plaintext's with the same DP at the "
                  "point; 'x no-DP round': over the same scheme's without DP there; 'upload / float32': a "
                  "client's upload bytes over 4 bytes per value; each aggregating party's slowest member, all "
                  "its work in the round (a key holder's decryption included), over its floor.",
                  "\n".join(f"- {line}" for line in point_lines(results)),
                  _md_table(SPECIAL_HEADERS, [special_row(sp["name"], c) for sp, cells in specials for c in cells])]
    parts += [
        "## First round (Numba JIT, key generation), seconds beyond a warm round",
        "The warm-up round less the median timed round of the scheme's first cell; a value near or below zero "
        "means the scheme has no first-call cost beyond the round-to-round noise.",
        _md_table(("scheme", "first-call s"), [(k, f"{v:.3f}") for k, v in results["first_call_s"].items()]),
    ]
    if results["peers"]:
        parts += ["## Peers (same run, at the base point and the special points that list them; securefl's "
                  "figures at the same point beside them)",
                  _md_table(PEER_HEADERS, [peer_row(p) for p in results["peers"]])]
    return "\n\n".join(parts) + "\n"


def _series(cells: list[dict], sweep: str, axis: str) -> dict[str, list[tuple[float, dict]]]:
    out: dict[str, list[tuple[float, dict]]] = {}
    for c in cells:
        if c["status"] == "ok" and sweep in c["sweeps"] and not c["dp"]:
            out.setdefault(c["scheme"], []).append((c[axis], c))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def _ticks(ax, xs: list[float]) -> None:
    """The swept values as the x ticks of a log axis."""
    from matplotlib.ticker import NullLocator

    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())


def _save(plt, fig, path: Path) -> bool:
    """Write one figure and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _sweep_plot(plt, cells: list[dict], sweep: str, axis: str, label: str, path: Path) -> bool:
    series = _series(cells, sweep, axis)
    if not series or max(len(v) for v in series.values()) < 2:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for scheme, pts in series.items():
        xs = [x for x, _ in pts]
        a.plot(xs, [c["aggregator_seconds"] for _, c in pts], "o-", label=scheme)
        b.plot(xs, [c["parties"]["client"]["seconds_per_party"] for _, c in pts], "o-", label=scheme)
    a.set(title="aggregating parties, seconds per round", xlabel=label, ylabel="seconds")
    b.set(title="one client, seconds per round", xlabel=label, ylabel="seconds")
    xs = sorted({x for pts in series.values() for x, _ in pts})
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_yscale("log")
        _ticks(ax, xs)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _bytes_plot(plt, cells: list[dict], cfg: dict, path: Path) -> bool:
    base = [c for c in cells if c["status"] == "ok" and not c["dp"] and not c.get("model") and c["n"] == cfg["base_n"]
            and c["m"] == cfg["base_m"] and c["dropout"] == cfg["base_dropout"]]
    if not base:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [c["scheme"] for c in base]
    ax.bar(names, [c["bytes_per_param"] for c in base], color="tab:blue", label="client upload")
    ax.plot(names, [c["parties"]["client"]["bytes_received_per_party"] / c["m"] for c in base], "o",
            color="tab:orange", label="client download")
    ax.set_yscale("log")
    ax.set(title=f"bytes per parameter, n={cfg['base_n']}, m={cfg['base_m']}", ylabel="bytes / parameter")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def _scaling_plot(plt, cells: list[dict], path: Path) -> bool:
    series = {k: v for k, v in _series(cells, "scaling", "n").items() if k != schemes.BASELINE}
    if not series or max(len(v) for v in series.values()) < 2:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for scheme, pts in series.items():
        ns = [x for x, _ in pts]
        a.loglog(ns, [c["parties"]["client"]["seconds_per_party"] for _, c in pts], "o-", label=f"{scheme} client")
        a.loglog(ns, [c["aggregator_seconds"] for _, c in pts], "s-", label=f"{scheme} server")
        b.loglog(ns, [c["parties"]["client"]["bytes_sent_per_party"] for _, c in pts], "o-", label=f"{scheme} client")
        b.loglog(ns, [c["parties"].get("server", {}).get("bytes_sent_per_party") for _, c in pts], "s-",
                 label=f"{scheme} server")
    m = next(iter(series.values()))[0][1]["m"]
    swept = ", ".join(series)
    a.set(title=f"{swept}: seconds per round, m={m}", xlabel="clients n", ylabel="seconds")
    b.set(title=f"{swept}: bytes sent per party", xlabel="clients n", ylabel="bytes")
    for ax in (a, b):
        _ticks(ax, sorted({x for pts in series.values() for x, _ in pts}))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plots(results: dict, out: Path) -> list[Path]:
    """The PNG plots that have data: time vs n, time vs m, bytes per parameter, the log-log scaling sweep (SecAgg+)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells, cfg = results["cells"], results["config"]
    made = []
    for name, draw in (
        ("time_vs_n.png", lambda p: _sweep_plot(plt, cells, "n", "n", "clients n", p)),
        ("time_vs_m.png", lambda p: _sweep_plot(plt, cells, "m", "m", "parameters m", p)),
        ("bytes_per_param.png", lambda p: _bytes_plot(plt, cells, cfg, p)),
        ("secaggplus_scaling.png", lambda p: _scaling_plot(plt, cells, p)),
    ):
        if draw(out / name):
            made.append(out / name)
    return made


def write(results: dict, out: Path) -> list[Path]:
    """results.json, results.md and the plots into `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(markdown(results))
    return [out / "results.json", out / "results.md", *plots(results, out)]
