"""Command line: `securefl run` (secure federated training on a dataset that ships offline), `securefl bench`,
`securefl audit` (the privacy report of a configuration, with empirical checks).

Output: rich on a terminal; plain, unwrapped lines when stdout is piped or redirected. Library
messages arrive through the "securefl" logger, which main() routes (securefl.log.configure).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

import securefl
from securefl import log, schemes
from securefl.bench import command as bench_command
from securefl.bench.output import fmt_bytes
from securefl.errors import InputError, SecureFLError

DEFAULT_AGGREGATOR = "secagg"
PIPE_WIDTH = 100_000  # console width when stdout is not a terminal: lines are never wrapped
SHOWN_PARAMS = ("graph", "neighbors", "threshold", "share_holders", "num_aggregators", "key_bits",
                "poly_modulus_degree")


def make_console() -> Console:
    """A rich console on a terminal; without a terminal, plain lines that never wrap (no width limit)."""
    console = Console()
    if console.is_terminal:
        return console
    return Console(soft_wrap=True, width=PIPE_WIDTH)


def _scheme_options(args: argparse.Namespace) -> dict[str, object]:
    """Scheme options from --neighbors, --threshold and the run's --dropout (SecAgg+ sizes (k, t) for it)."""
    opts: dict[str, object] = {}
    if args.neighbors is not None:
        opts["neighbors"] = None if args.neighbors == "complete" else args.neighbors
    if args.threshold is not None:
        opts["threshold"] = args.threshold
    return opts | schemes.dropout_options(args.aggregator, getattr(args, "dropout", 0.0))


def _aggregator(args: argparse.Namespace) -> securefl.Aggregator:
    return schemes.make(args.aggregator, clip=args.value_clip, seed=args.seed, dp=_mechanism(args),
                        **_scheme_options(args))


def _dropout_text(m, after_input: bool) -> str:
    """'in 5/8 (3 dropped at masked_input, recovered)': survivors over selected clients, and the dropouts."""
    text = f"in {m.survivors}/{m.participants}"
    if m.dropped:
        stages = sorted(set(m.dropped.values()))
        outcome = "round failed" if m.error else "recovered" if not after_input else "recovered, inputs kept"
        text += f" ({len(m.dropped)} dropped at {', '.join(stages)}, {outcome})"
    return text


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from securefl.datasets import federated_digits
    from securefl.fedavg import train

    if args.engine == "flower":  # the same training through Flower's simulation engine (the flower extra)
        try:
            from securefl.flower.training import train
        except ModuleNotFoundError as e:
            raise InputError(f"--engine flower: {e}") from None
    agg = _aggregator(args)
    stage = args.dropout_stage or agg.input_stage
    if stage not in agg.stages:
        raise InputError(f"--dropout-stage {stage}: not a stage of {args.aggregator}; "
                                 f"choose one of {', '.join(agg.stages)}")
    after_input = agg.stages.index(stage) > agg.stages.index(agg.input_stage)
    data = federated_digits(args.clients, args.alpha, args.seed)
    console.print(
        f"[bold]securefl run[/]: {args.aggregator} aggregation, {args.clients} clients on digits "
        f"(Dirichlet alpha={args.alpha}), {args.rounds} rounds x {args.local_epochs} local epochs, "
        f"model {args.model}, dropout {args.dropout:.0%}" + (f" at {stage}" if args.dropout > 0 else "")
    )
    console.print(f"  who learns an individual update: {agg.threat_model}")
    if agg.dp is not None:
        how = (f"for target epsilon {args.target_epsilon:g} over {args.rounds} rounds"
               if args.target_epsilon is not None else "")
        console.print(f"  DP: {args.dp} Gaussian noise, z={agg.dp.noise_multiplier:.4g} {how}, clip {args.clip:g}, "
                      f"q={args.sample_rate:g}, delta={args.delta:g}; every client weighs the same")
    progress = Progress(
        TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"), console=console, transient=True,
    )
    history = []

    def on_round(m) -> None:
        history.append(m)
        if len(history) == 1 and m.params:
            shown = ", ".join(f"{k} {m.params[k]}" for k in SHOWN_PARAMS if k in m.params)
            if shown:
                progress.console.print(f"  {args.aggregator} parameters (round 1, {m.participants} clients): {shown}")
        line = (
            f"round {m.round:3d}  acc {m.accuracy:6.2%}  loss {m.loss:.3f}  train {m.train_seconds:5.2f}s  "
            f"agg {m.aggregate_seconds:5.2f}s  {fmt_bytes(m.client_bytes)}/client  {_dropout_text(m, after_input)}"
        )
        if m.epsilon is not None:
            line += f"  epsilon {m.epsilon:.2f}"
        if m.error:
            line += f"  [red]round skipped: {escape(m.error)}[/]"
        progress.console.print(line)
        progress.update(task, advance=1, status=f"acc {m.accuracy:.2%}")

    with progress:
        task = progress.add_task("train", total=args.rounds, status="")
        train(
            agg, data, model=args.model, rounds=args.rounds, local_epochs=args.local_epochs, lr=args.lr,
            batch_size=args.batch_size, dropout=args.dropout, dropout_stage=stage, sample_rate=args.sample_rate,
            seed=args.seed, on_round=on_round,
        )
    table = Table(title=f"securefl run: {args.aggregator}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    final = history[-1]
    ok = [m for m in history if m.error is None]
    rows = [
        ("final test accuracy", f"{final.accuracy:.2%}"),
        ("best test accuracy", f"{max(m.accuracy for m in history):.2%}"),
        ("rounds (skipped)", f"{len(history)} ({len(history) - len(ok)})"),
        ("dropouts recovered / dropped", f"{sum(len(m.dropped) for m in ok)} / {sum(len(m.dropped) for m in history)}"),
        ("local training seconds", f"{sum(m.train_seconds for m in history):.2f}"),
        ("aggregation seconds", f"{sum(m.aggregate_seconds for m in history):.2f}"),
        ("bytes sent per client per round", fmt_bytes(sum(m.client_bytes for m in history) / len(history))),
    ]
    if agg.dp is not None:
        rows.append(("(epsilon, delta)", f"({agg.dp.epsilon():.3f}, {agg.dp.delta:g}) after {agg.dp.rounds} rounds, "
                                         f"{args.dp} noise, z={agg.dp.noise_multiplier:.4g}, q={args.sample_rate}"))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k != "func"} | {"dropout_stage": stage}
        if agg.dp is not None:
            config["noise_multiplier"] = agg.dp.noise_multiplier
        Path(args.json).write_text(json.dumps({"config": config, "rounds": [m.to_dict() for m in history]}, indent=2))
        console.print(f"per-round metrics written to {args.json}")
    return 0


def _mechanism(args: argparse.Namespace) -> object:
    """The DP mechanism asked for on the command line (None for --dp none); --target-epsilon sets its z."""
    if args.dp == "none":
        return None
    from securefl import dp

    z = args.noise_multiplier
    if getattr(args, "target_epsilon", None) is not None:
        z = dp.noise_multiplier(target_epsilon=args.target_epsilon, sampling_rate=args.sample_rate,
                                rounds=args.rounds, delta=args.delta)
    cls = dp.GaussianMechanism if args.dp == "central" else dp.DistributedGaussian
    return cls(z, args.clip, delta=args.delta, sampling_rate=args.sample_rate)


def _add_scheme_options(p: argparse.ArgumentParser) -> None:
    # the help names no scheme: which take these options is on their classes, and --help loads no scheme library
    p.add_argument("--aggregator", choices=schemes.names(), default=DEFAULT_AGGREGATOR)
    p.add_argument("--neighbors", type=_neighbors, metavar="{auto,complete,K}",
                   help="(schemes with share holders) share holders per client: 'auto' (SecAgg+ parameter finder, "
                        "sized for a 5%% dropout rate, or securefl run's --dropout when higher), 'complete' (every "
                        "other client) or an integer K >= 2")
    p.add_argument("--threshold", type=_threshold, metavar="T",
                   help="(schemes with share holders) shares needed to reconstruct: an integer count, or a fraction "
                        "in (0, 1] of the share holders")


def _neighbors(text: str) -> str | int:
    if text in ("auto", "complete"):
        return text
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'complete' or an integer >= 2, got {text!r}") from None
    if k < 2:
        raise argparse.ArgumentTypeError(f"neighbors must be >= 2, got {k}")
    return k


def _threshold(text: str) -> int | float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or a fraction in (0, 1], got {text!r}") from None
    if t.is_integer() and "." not in text:
        if t < 1:
            raise argparse.ArgumentTypeError(f"a threshold count must be >= 1, got {text}")
        return int(t)
    if not 0 < t <= 1:
        raise argparse.ArgumentTypeError(f"a fractional threshold must be in (0, 1], got {text}")
    return t


def _add_dp_options(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument("--dp", choices=["none", "central", "distributed"], default=None,
                   help="differential privacy: the decoding party's Gaussian noise (central) or the clients' "
                        f"discrete Gaussian noise (distributed); default: {default_help}")
    p.add_argument("--noise-multiplier", type=float, default=None, help="noise std / clip (default 1.0)")
    p.add_argument("--clip", type=float, default=1.0, help="each update is clipped to L2 <= clip (with --dp)")
    p.add_argument("--delta", type=float, default=1e-5, help="the delta of the reported epsilon")
    p.add_argument("--sample-rate", type=float, default=1.0,
                   help="each client takes part in a round with this probability (Poisson sampling)")


def cmd_audit(args: argparse.Namespace, console: Console) -> int:
    from securefl import audit

    if args.run:
        return _audit_run(args, console)
    agg = _aggregator(args)
    t0 = time.perf_counter()
    report = audit.privacy_report(agg, clients=args.clients, dim=args.dim, seed=args.seed, rounds=args.rounds)
    console.print(report.to_markdown(), markup=False, soft_wrap=True)
    t1 = time.perf_counter()
    check = audit.transcript_check(agg, clients=args.clients, dim=args.dim, seed=args.seed)
    console.print(check.summary(), markup=False)
    t2 = time.perf_counter()
    one = audit.one_run_audit(agg, canaries=args.canaries, per_round=args.clients, seed=args.seed)
    for line in one.explain(report):
        console.print(line, markup=False)
    t3 = time.perf_counter()
    console.print(f"seconds: privacy report {t1 - t0:.1f}, transcript check {t2 - t1:.1f}, one-run audit {t3 - t2:.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        out = {"report": report.to_dict(), "transcript_check": {**vars(check), "indistinguishable":
               check.indistinguishable}, "one_run_audit": vars(one)}
        Path(args.json).write_text(json.dumps(out, indent=2))
        console.print(f"audit written to {args.json}")
    return 0


def _audit_run(args: argparse.Namespace, console: Console) -> int:
    """`securefl audit --run`: train the digits example with canary clients; epsilon, lower bound, accuracy."""
    from securefl import audit
    from securefl.datasets import federated_digits

    agg = _aggregator(args)
    data = federated_digits(args.clients, args.alpha, args.seed)
    dp_text = "no DP" if agg.dp is None else (f"{args.dp} noise z={agg.dp.noise_multiplier:.4g}, clip {args.clip:g}, "
                                              f"q={args.sample_rate:g}, delta={args.delta:g}")
    console.print(f"securefl audit --run: {args.aggregator}, {args.clients} clients + {args.canaries} canary clients "
                  f"on digits, {args.rounds} rounds x {args.local_epochs} local epochs, model {args.model}, {dp_text}",
                  markup=False)

    def on_round(r: audit.RunRound) -> None:
        eps = "inf (no DP)" if r.epsilon is None else f"{r.epsilon:.3f}"
        console.print(f"round {r.round:3d}  acc {r.accuracy:6.2%}  accountant epsilon {eps}  lower bound "
                      f"{r.lower_bound:.3f} ({r.correct}/{r.guesses} right)  canaries in the sum {r.canaries}",
                      markup=False)

    res = audit.audit_run(agg, data, canaries=args.canaries, rounds=args.rounds, sample_rate=args.sample_rate,
                          seed=args.seed, on_round=on_round, model=args.model, local_epochs=args.local_epochs,
                          lr=args.lr)
    console.print(res.to_markdown(), markup=False, soft_wrap=True)
    console.print(f"plot written to {res.plot(args.plot)}", markup=False)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(res.to_json())
        console.print(f"audit written to {args.json}", markup=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="securefl", description=securefl.__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"securefl {securefl.__version__}")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="short secure federated training on the digits dataset (ships offline)")
    _add_scheme_options(run)
    run.add_argument("--clients", type=int, default=10)
    run.add_argument("--rounds", type=int, default=20)
    run.add_argument("--local-epochs", type=int, default=2)
    run.add_argument("--dropout", type=float, default=0.0,
                     help="probability that each selected client drops in a round")
    run.add_argument("--dropout-stage", metavar="STAGE",
                     help="the protocol stage at which they drop: any stage of the scheme (e.g. SecAgg's share_keys "
                          "or unmasking; a name the scheme lacks is refused with its list); default: the scheme's "
                          "input stage, so the scheme must recover (SecAgg: masked_input, the server rebuilds the "
                          "masks of clients that shared their keys and vanished)")
    run.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew (smaller = more non-IID)")
    run.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    run.add_argument("--lr", type=float, default=0.05)
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--value-clip", type=float, default=8.0, help="each update value is clipped to [-v, v]")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--engine", choices=["in-process", "flower"], default="in-process",
                     help="in-process (default) or flower: every client a SuperNode of Flower's simulation engine, "
                          "the server Flower's FedAvg with securefl's SecureStrategy (docs/flower.md)")
    run.add_argument("--json", metavar="PATH", help="write per-round metrics as JSON")
    _add_dp_options(run, "none, or with --target-epsilon distributed where the scheme supports it, else central")
    run.add_argument("--target-epsilon", type=float, metavar="EPS",
                     help="choose the noise multiplier that spends this epsilon (at --delta) over all --rounds at "
                          "--sample-rate (like Opacus's make_private_with_epsilon); implies --dp")
    run.set_defaults(func=cmd_run)
    aud = sub.add_parser("audit", help="privacy report of a configuration, with empirical checks")
    _add_scheme_options(aud)
    aud.add_argument("--run", action="store_true",
                     help="audit a whole training run of the digits example (canary clients in every round) instead "
                          "of one round; writes a plot (--plot)")
    aud.add_argument("--clients", type=int, default=None,
                     help="clients in the audited round (default 6), or in the training run (default 10)")
    aud.add_argument("--dim", type=int, default=256, help="values per update in the audited round and the transcript "
                                                          "check's rounds")
    aud.add_argument("--canaries", type=int, default=None,
                     help="canary clients of the one-run audit (default 400, in rounds of --clients), or of the run "
                          "(default 100, each in every round it is sampled for)")
    aud.add_argument("--rounds", type=int, default=10,
                     help="rounds the cumulative epsilon is given for; with --run, training rounds")
    aud.add_argument("--target-epsilon", type=float, metavar="EPS",
                     help="choose the noise multiplier that spends this epsilon over --rounds at --sample-rate")
    aud.add_argument("--local-epochs", type=int, default=2, help="(--run) local epochs per round")
    aud.add_argument("--lr", type=float, default=0.05, help="(--run) client learning rate")
    aud.add_argument("--alpha", type=float, default=0.5, help="(--run) Dirichlet label skew of the client split")
    aud.add_argument("--model", choices=["mlp", "cnn"], default="mlp", help="(--run) the model")
    aud.add_argument("--plot", metavar="PNG", default="audit-run.png", help="(--run) where the plot goes")
    aud.add_argument("--value-clip", type=float, default=8.0, help="each update value is clipped to [-v, v]")
    aud.add_argument("--seed", type=int, default=0)
    aud.add_argument("--json", metavar="PATH", help="write the report and checks as JSON")
    _add_dp_options(aud, "distributed where the scheme supports it, else central")
    aud.set_defaults(func=cmd_audit)
    bench_command.add_parser(sub)
    return p


def _check_dp(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Resolve --dp's default for the scheme; refuse a mechanism the scheme cannot run, naming the one to use."""
    if not 0.0 < a.sample_rate <= 1.0:
        p.error("--sample-rate must be in (0, 1]")
    target = getattr(a, "target_epsilon", None)
    if target is not None and a.noise_multiplier is not None:
        p.error("give --noise-multiplier or --target-epsilon, not both")
    if target is not None and a.dp == "none":
        p.error("--target-epsilon needs DP: drop --dp none or choose --dp central or --dp distributed")
    wants_dp = a.command == "audit" or target is not None
    if a.dp is None and not wants_dp:
        a.dp = "none"
    if a.noise_multiplier is None:
        a.noise_multiplier = 1.0
    if a.dp == "none":
        return
    kinds = schemes.dp_kinds(a.aggregator)
    if not kinds:
        p.error(f"--aggregator {a.aggregator} takes no DP mechanism; use --dp none")
    if a.dp is None:
        a.dp = kinds[0]
    elif a.dp not in kinds:
        p.error(f"--aggregator {a.aggregator} cannot add {a.dp} noise; use --dp {' or --dp '.join(kinds)}")


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.command not in ("run", "audit"):
        return
    if (a.neighbors is not None or a.threshold is not None) and "neighbors" not in schemes.options(a.aggregator):
        takes = " and ".join(n for n in schemes.names() if "neighbors" in schemes.options(n))
        p.error(f"--neighbors and --threshold apply to {takes} only, not --aggregator {a.aggregator}")
    if a.command == "audit":
        a.clients = a.clients if a.clients is not None else 10 if a.run else 6
        a.canaries = a.canaries if a.canaries is not None else 100 if a.run else 400
        if a.clients < (1 if a.run else 2) or a.dim < 1 or a.canaries < 2 or a.rounds < 1 or a.local_epochs < 1:
            p.error("--clients must be >= 2 (>= 1 with --run), --dim, --rounds and --local-epochs >= 1, "
                    "--canaries >= 2")
    if a.command == "run":
        if a.clients < 1 or a.rounds < 1 or a.local_epochs < 1 or a.batch_size < 1:
            p.error("--clients, --rounds, --local-epochs and --batch-size must be >= 1")
        if not 0.0 <= a.dropout < 1.0:
            p.error("--dropout must be in [0, 1)")
    _check_dp(p, a)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = make_console()
    log.configure(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO, console)
    _check_args(parser, args)
    try:
        return args.func(args, console)
    except SecureFLError as e:
        console.print(f"[red]error:[/] {escape(str(e))}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
