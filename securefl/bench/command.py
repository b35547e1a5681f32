"""The `securefl bench` subcommand: options, a rich progress bar, the printed table, the files written."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from securefl.bench import config as presets

TABLE_WIDTH = 165  # the tables are printed at least this wide (piped output included), so no column is cut
DESCRIPTION = """\
Measure every registered scheme the same way: seconds per party kind and phase, bytes per party
kind, peak memory, the ratio to Plaintext on the same updates in the same run, each scheme's
hardware floor (AES-CTR and memory throughput measured in the run) and peer libraries where
installed. Writes results.json (with the machine description), results.md and PNG plots to --out.

--quick: n in {4, 8, 16}, m in {100, 1000, 10000}, dropout 0 and 25%, both DP mechanisms at the base
point, SecAgg+ n in {50, 100, 200} at m=100; 3 timed rounds per cell, 10 s per cell, no new cell
after 140 s: under 3 minutes on 2 cores (about 2 minutes measured on a busy 2-core Xeon).
Full run (default): n in {10, 50, 100}, m in {1e3, 1e4, 1e5}, dropout 0 and 10%, both DP mechanisms
at n=100, m=1e5, the scaling sweep (schemes that scale in n: SecAgg+) at n in {100, 300, 1000, 3000,
10000}, m=1e4 (600 s per cell of that sweep), two special points (CKKS on a ResNet-18-shaped
state_dict of 11.7M values with 10 clients, beside TenSEAL at FLARE's defaults on the same tensors;
SecAgg with and without distributed DP at n=20, m=1e5), peers (TenSEAL at FLARE's defaults, phe per
value, Flower's SecAgg+) at the base point; 3 timed rounds per cell, 300 s per cell. Larger sizes are
one option away (--n, --m, --scaling-n, --repeats). See docs/benchmarks.md for the measured duration.
"""


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(float(v)) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"every value must be >= 1, got {text!r}")
    return vals


def _rates(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated rates, got {text!r}") from None
    if not vals or any(not 0 <= v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"dropout rates must be in [0, 1), got {text!r}")
    return vals


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `bench` on the securefl subcommand parser."""
    p = sub.add_parser("bench", help="crypto overhead of every scheme against plaintext, the hardware floor and peers",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small n and m: every scheme in a few minutes")
    p.add_argument("--out", default="bench-out", metavar="DIR", help="output directory (default bench-out/)")
    p.add_argument("--schemes", type=_names, help="comma-separated registry names (default: all registered)")
    p.add_argument("--n", type=_ints, help="clients swept (the middle value is the base point)")
    p.add_argument("--m", type=_ints, help="parameters swept (the middle value is the base point)")
    p.add_argument("--dropout", type=_rates, help="dropout rates swept (the first is the base point)")
    p.add_argument("--scaling-n", type=_ints, help="SecAgg+ scaling sweep in n ('' for none)")
    p.add_argument("--scaling-m", type=int, help="parameters in the SecAgg+ scaling sweep")
    p.add_argument("--repeats", type=int, help="timed rounds per cell after the warm-up round")
    p.add_argument("--budget", type=float, help="skip a cell whose estimated seconds exceed this")
    p.add_argument("--dp-mechanisms", type=_names, help="DP cells at the base point (default distributed,central)")
    p.add_argument("--no-dp", action="store_true", help="no DP cells")
    p.add_argument("--no-peers", action="store_true", help="no peer reference lines")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bench)


def config_from(args: argparse.Namespace) -> presets.Config:
    """The preset (--quick or full) with the options given on the command line."""
    if args.repeats is not None and args.repeats < 1:
        raise argparse.ArgumentTypeError("--repeats must be >= 1")
    bad = [d for d in args.dp_mechanisms or () if d not in ("distributed", "central")]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown DP mechanism {bad[0]!r}; choose distributed or central")
    ns, ms = (tuple(sorted(v)) if v else None for v in (args.n, args.m))
    return presets.preset(
        args.quick, ns=ns, ms=ms, dropouts=args.dropout, schemes=args.schemes,
        base_n=ns[len(ns) // 2] if ns else None, base_m=ms[len(ms) // 2] if ms else None,
        base_dropout=args.dropout[0] if args.dropout else None, scaling_ns=args.scaling_n,
        scaling_m=args.scaling_m, repeats=args.repeats, cell_budget_s=args.budget, seed=args.seed,
        dp_mechanisms=() if args.no_dp else args.dp_mechanisms, peers=False if args.no_peers else None,
    )


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from securefl.bench import harness, output

    try:
        config = config_from(args)
    except argparse.ArgumentTypeError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    total = harness.total_units(config)
    progress = Progress(TextColumn("[bold]bench"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[status]}"), console=console, transient=True)
    with progress:
        task = progress.add_task("bench", total=total, status="")
        results = harness.run(config, lambda units, what: progress.update(task, advance=units, status=what))
    written = output.write(results, Path(args.out))
    hw = results["hardware"]
    table = Table(title=f"securefl bench{' --quick' if config.quick else ''}: {results['machine']['cpu']}, "
                        f"{results['machine']['usable_cores']} cores, AES-CTR {hw['aes_ctr_bytes_per_s'] / 1e9:.2f} "
                        f"GB/s, memory {hw['memory_bytes_per_s'] / 1e9:.1f} GB/s")
    for h in output.COMPACT:
        table.add_column(h, justify="left" if h in ("scheme", "DP", "status") else "right")
    for cell in results["cells"]:
        table.add_row(*output.row(cell, output.COMPACT, full_errors=False))
    console.width = max(console.width, TABLE_WIDTH)
    console.print(table)
    for cell in results["cells"]:
        if cell["status"] != "ok":
            console.print(f"{cell['scheme']} dp={cell['dp']} n={cell['n']} m={cell['m']} "
                          f"drop={cell['dropout']:.0%}: {cell['status']}: {cell['error']}")
    for line in output.point_lines(results):
        console.print(line)
    console.print("first round beyond a warm one (JIT, keys): "
                  + ", ".join(f"{k} {v:.2f} s" for k, v in results["first_call_s"].items()))
    if results["peers"]:
        peers = Table(title="peers at the base point (and the special points that list them), securefl beside them")
        for h in output.PEER_HEADERS:
            peers.add_column(h, justify="left" if h in ("peer", "vs securefl", "status") else "right")
        for p in results["peers"]:
            peers.add_row(*output.peer_row(p)[:-1], p["status"])
        console.print(peers)
        for p in results["peers"]:
            if p["status"] != "ok":
                console.print(f"peer {p['name']}: {p['status']}: {p['error']}")
    console.print(f"{results['wall_s']:.0f} s; written: " + ", ".join(str(p) for p in written))
    return 0
