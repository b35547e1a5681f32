"""Command line: `securefl run` (secure federated training on a dataset that ships offline), `securefl bench`,
`securefl audit` (the privacy report of a configuration, with empirical checks)."""

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
from securefl.bench import command as bench_command
from securefl.errors import SecureFLError

DEFAULT_AGGREGATOR = "secagg"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from securefl.datasets import federated_digits
    from securefl.fedavg import train

    agg = schemes.make(args.aggregator, clip=args.value_clip, seed=args.seed, dp=_mechanism(args))
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
            batch_size=args.batch_size, dropout=args.dropout, sample_rate=args.sample_rate, seed=args.seed,
            on_round=on_round,
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
    if agg.dp is not None:
        rows.append(("(epsilon, delta)", f"({agg.dp.epsilon():.3f}, {agg.dp.delta:g}) after {agg.dp.rounds} rounds, "
                                         f"{args.dp} noise, z={args.noise_multiplier}, q={args.sample_rate}"))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k != "func"}
        Path(args.json).write_text(json.dumps({"config": config, "rounds": [m.to_dict() for m in history]}, indent=2))
        console.print(f"per-round metrics written to {args.json}")
    return 0


def _mechanism(args: argparse.Namespace) -> object:
    """The DP mechanism asked for on the command line (None for --dp none)."""
    from securefl import dp

    if args.dp == "none":
        return None
    cls = dp.GaussianMechanism if args.dp == "central" else dp.DistributedGaussian
    return cls(args.noise_multiplier, args.clip, delta=args.delta, sampling_rate=args.sample_rate)


def _add_dp_options(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--dp", choices=["none", "central", "distributed"], default=default,
                   help="differential privacy: central Gaussian noise or clients' discrete Gaussian noise")
    p.add_argument("--noise-multiplier", type=float, default=1.0, help="noise std / clip")
    p.add_argument("--clip", type=float, default=1.0, help="each update is clipped to L2 <= clip (with --dp)")
    p.add_argument("--delta", type=float, default=1e-5, help="the delta of the reported epsilon")
    p.add_argument("--sample-rate", type=float, default=1.0,
                   help="each client takes part in a round with this probability (Poisson sampling)")


def cmd_audit(args: argparse.Namespace, console: Console) -> int:
    from securefl.dp import audit

    agg = schemes.make(args.aggregator, clip=args.value_clip, seed=args.seed, dp=_mechanism(args))
    report = audit.privacy_report(agg, clients=args.clients, dim=args.dim, seed=args.seed)
    console.print(report.to_markdown(), markup=False, soft_wrap=True)
    check = audit.transcript_check(agg, clients=args.clients, seed=args.seed)
    verdict = "indistinguishable" if check.indistinguishable else "DISTINGUISHABLE"
    console.print(f"transcript check: what {check.party} receives with all-zero vs large inputs: chi-square "
                  f"p = {check.p_value:.3g} over {check.bytes_compared} bytes -> {verdict} (alpha {check.alpha:g})",
                  markup=False)
    one = audit.one_run_audit(agg, canaries=args.canaries, seed=args.seed)
    bound = "no DP: nothing to compare" if one.epsilon_accountant is None else (
        f"accountant epsilon {one.epsilon_accountant:.3f}")
    console.print(f"one-run audit (Steinke, Nasr, Jagielski 2023): {one.canaries} canaries, "
                  f"{one.correct}/{one.guesses} guesses right -> epsilon >= {one.epsilon_lower_bound:.3f} "
                  f"at {one.confidence:.0%} confidence ({bound})", markup=False)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        out = {"report": report.to_dict(), "transcript_check": {**vars(check), "indistinguishable":
               check.indistinguishable}, "one_run_audit": vars(one)}
        Path(args.json).write_text(json.dumps(out, indent=2))
        console.print(f"audit written to {args.json}")
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
    _add_dp_options(run, "none")
    run.set_defaults(func=cmd_run)
    aud = sub.add_parser("audit", help="privacy report of a configuration, with empirical checks")
    aud.add_argument("--aggregator", choices=schemes.names(), default=DEFAULT_AGGREGATOR)
    aud.add_argument("--clients", type=int, default=6, help="clients in the audited round")
    aud.add_argument("--dim", type=int, default=256, help="values per update in the audited round")
    aud.add_argument("--canaries", type=int, default=500, help="canaries of the one-run audit")
    aud.add_argument("--value-clip", type=float, default=8.0, help="each update value is clipped to [-v, v]")
    aud.add_argument("--seed", type=int, default=0)
    aud.add_argument("--json", metavar="PATH", help="write the report and checks as JSON")
    _add_dp_options(aud, "distributed")
    aud.set_defaults(func=cmd_audit)
    bench_command.add_parser(sub)
    return p


def _check_run_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.command in ("run", "audit") and not 0.0 < a.sample_rate <= 1.0:
        p.error("--sample-rate must be in (0, 1]")
    if a.command == "audit" and (a.clients < 2 or a.dim < 1 or a.canaries < 2):
        p.error("--clients must be >= 2, --dim >= 1 and --canaries >= 2")
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
