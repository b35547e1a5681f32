"""Command line: `securefl run` (secure federated training on a dataset that ships offline)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import securefl
from securefl import schemes
from securefl.errors import SecureFLError

DEFAULT_AGGREGATOR = "additive"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from securefl.datasets import federated_digits
    from securefl.fedavg import train

    agg = schemes.make(args.aggregator, clip=args.value_clip, seed=args.seed)
    data = federated_digits(args.clients, args.alpha, args.seed)
    console.print(
        f"[bold]securefl run[/]: {args.aggregator} aggregation, {args.clients} clients on digits "
        f"(Dirichlet alpha={args.alpha}), {args.rounds} rounds x {args.local_epochs} local epochs, "
        f"model {args.model}, dropout {args.dropout:.0%}"
    )
    console.print(f"  who learns an individual update: {agg.threat_model}")
    progress = Progress(
        TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"), console=console, transient=True,
    )
    history = []

    def on_round(m) -> None:
        history.append(m)
        line = (
            f"round {m.round:3d}  acc {m.accuracy:6.2%}  loss {m.loss:.3f}  train {m.train_seconds:5.2f}s  "
            f"agg {m.aggregate_seconds:5.2f}s  {_fmt_bytes(m.client_bytes)}/client  "
            f"in {m.survivors}/{m.participants}"
        )
        if m.epsilon is not None:
            line += f"  epsilon {m.epsilon:.2f}"
        if m.error:
            line += f"  [red]round skipped: {m.error}[/]"
        progress.console.print(line)
        progress.update(task, advance=1, status=f"acc {m.accuracy:.2%}")

    with progress:
        task = progress.add_task("train", total=args.rounds, status="")
        train(
            agg, data, model=args.model, rounds=args.rounds, local_epochs=args.local_epochs, lr=args.lr,
            batch_size=args.batch_size, dropout=args.dropout, seed=args.seed, on_round=on_round,
        )
    table = Table(title=f"securefl run: {args.aggregator}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    final = history[-1]
    rows = [
        ("final test accuracy", f"{final.accuracy:.2%}"),
        ("best test accuracy", f"{max(m.accuracy for m in history):.2%}"),
        ("rounds (skipped)", f"{len(history)} ({sum(m.error is not None for m in history)})"),
        ("local training seconds", f"{sum(m.train_seconds for m in history):.2f}"),
        ("aggregation seconds", f"{sum(m.aggregate_seconds for m in history):.2f}"),
        ("bytes sent per client per round", _fmt_bytes(sum(m.client_bytes for m in history) / len(history))),
    ]
    if final.epsilon is not None:
        rows.append(("epsilon", f"{final.epsilon:.3f}"))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k != "func"}
        Path(args.json).write_text(json.dumps({"config": config, "rounds": [m.to_dict() for m in history]}, indent=2))
        console.print(f"per-round metrics written to {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="securefl", description=securefl.__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"securefl {securefl.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="short secure federated training on the digits dataset (ships offline)")
    run.add_argument("--aggregator", choices=schemes.names(), default=DEFAULT_AGGREGATOR)
    run.add_argument("--clients", type=int, default=10)
    run.add_argument("--rounds", type=int, default=20)
    run.add_argument("--local-epochs", type=int, default=2)
    run.add_argument("--dropout", type=float, default=0.0, help="fraction of clients that vanish each round")
    run.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew (smaller = more non-IID)")
    run.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    run.add_argument("--lr", type=float, default=0.05)
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--value-clip", type=float, default=8.0, help="each update value is clipped to [-v, v]")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json", metavar="PATH", help="write per-round metrics as JSON")
    run.set_defaults(func=cmd_run)
    return p


def _check_run_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.command != "run":
        return
    if a.clients < 1 or a.rounds < 1 or a.local_epochs < 1 or a.batch_size < 1:
        p.error("--clients, --rounds, --local-epochs and --batch-size must be >= 1")
    if not 0.0 <= a.dropout < 1.0:
        p.error("--dropout must be in [0, 1)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_run_args(parser, args)
    console = Console()
    try:
        return args.func(args, console)
    except SecureFLError as e:
        console.print(f"[red]error:[/] {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
