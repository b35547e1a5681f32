"""A securefl deployment on this machine: flower-superlink, one flower-supernode per party, the digits app
(examples/flower) started with Flower's own CLI (`flwr run`), and one SuperNode killed mid-protocol.

    python .ci/flower_deploy.py --scheme plaintext --clients 4 --rounds 2 --kill client/2 --kill-stage upload

Every party runs in its own processes with its own FLWR_HOME and sees only its own key file (standing
in for separate machines); all of them talk over 127.0.0.1. When the server announces stage
--kill-stage of round --kill-round, the victim SuperNode and its children get SIGKILL; the run must
still finish every round, with the victim dropped at that stage (SecAgg: recovered) and the others
in the aggregate. With --simulation, a simulation SuperLink (`flower-superlink --simulation`) runs
the same app with no SuperNodes: the doc's simulation commands. Every process started here is
stopped here by its PID (its descendants found through /proc), on success and on failure.
Exit status 0 when the run checks out; the summary is printed as JSON (and written to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "flower"
BIN = Path(sys.executable).parent


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from an earlier run is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def descendants(pid: int) -> list[int]:
    """pid and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def signal_pids(pids: list[int], sig: int) -> None:
    for p in reversed(pids):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


class Processes:
    """Processes started here, each in its own session; stop() ends exactly them and their descendants."""

    def __init__(self, work: Path):
        self.work = work
        self.procs: dict[str, subprocess.Popen] = {}
        self.seen: set[int] = set()

    def env(self, name: str) -> dict[str, str]:
        home = self.work / "flwr_home" / name.replace("/", "-")
        home.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name.replace('/', '-')}.log", "w")  # noqa: SIM115 (closed with the process)
        p = subprocess.Popen(cmd, env=self.env(name), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             cwd=self.work)
        self.procs[name] = p
        return p

    def track(self) -> None:
        for p in self.procs.values():
            self.seen.update(descendants(p.pid))

    def kill(self, name: str) -> list[int]:
        pids = descendants(self.procs[name].pid)
        self.seen.update(pids)
        signal_pids(pids, signal.SIGKILL)
        return pids

    def stop(self) -> dict:
        self.track()
        for p in self.procs.values():
            signal_pids(descendants(p.pid), signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(x) for x in self.seen):
            time.sleep(0.2)
        left = [x for x in self.seen if alive(x)]
        signal_pids(left, signal.SIGKILL)
        for p in self.procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        return {"tracked_pids": len(self.seen), "needed_sigkill": len(left),
                "still_alive": [x for x in self.seen if alive(x)]}


def toml_str(path: Path) -> str:
    return json.dumps(str(path))  # a TOML basic string


def run(args: argparse.Namespace) -> dict:
    work = Path(args.out or tempfile.mkdtemp(prefix="securefl-deploy-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    fed = work / "fed"
    subprocess.run([sys.executable, str(APP / "make_federation.py"), "--scheme", args.scheme, "--clients",
                    str(args.clients), "--out", str(fed), "--timeout", str(args.stage_timeout)], check=True)
    sys.path.insert(0, str(ROOT))
    from securefl.flower import simulation_parties
    from securefl.flower.node import load_config

    parties = [str(p) for p in simulation_parties(load_config(fed / "config.json"))]
    report, progress = work / "report.json", work / "progress.txt"
    ports = [args.port + i for i in range(1 + (0 if args.simulation else len(parties)))]
    busy = [p for p in ports if not port_free(p)]
    if busy:
        raise SystemExit(f"ports in use: {busy} (choose another --port)")
    procs = Processes(work)
    summary: dict = {"scheme": args.scheme, "parties": parties, "work": str(work), "mode":
                     "simulation" if args.simulation else "deployment"}
    t0 = time.monotonic()
    try:
        link = f"127.0.0.1:{args.port}"
        cmd = [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(args.port),
               "--disable-runtime-dependency-installation"] + (["--simulation"] if args.simulation else [])
        procs.start("superlink", cmd)
        while port_free(args.port):
            if procs.procs["superlink"].poll() is not None:
                raise RuntimeError("flower-superlink exited; see superlink.log")
            time.sleep(0.1)
        if not args.simulation:
            for i, party in enumerate(parties):
                nc = f"securefl-key={toml_str(fed / (party.replace('/', '-') + '.pem'))} " \
                     f"securefl-config={toml_str(fed / 'config.json')} securefl-role=\"{party.split('/')[0]}\""
                if party.startswith("client/"):
                    nc += f" partition-id={party.split('/')[1]} num-partitions={args.clients}"
                procs.start(party, [str(BIN / "flower-supernode"), "--insecure", "--superlink", link, "--port",
                                    str(ports[1 + i]), "--node-config", nc])
        cli = procs.env("cli")["FLWR_HOME"]
        options = f"options.num-supernodes = {len(parties)}\n" if args.simulation else ""
        Path(cli, "config.toml").write_text(f'[superlink]\ndefault = "securefl"\n\n[superlink.securefl]\n'
                                            f'address = "{link}"\ninsecure = true\n{options}')
        key = "securefl-federation" if args.simulation else "securefl-config"
        value = fed if args.simulation else fed / "config.json"
        run_config = (f"num-server-rounds={args.rounds} input-timeout={args.input_timeout} {key}={toml_str(value)} "
                      f"securefl-report={toml_str(report)} securefl-progress={toml_str(progress)}")
        summary["flwr_run"] = ["flwr", "run", str(APP), "securefl", "--run-config", run_config, "--stream"]
        cli_run = procs.start("cli", [str(BIN / "flwr"), "run", str(APP), "securefl", "--run-config", run_config,
                                      "--stream"])
        ended = None
        trigger = f"round {args.kill_round} stage {args.kill_stage} "
        while True:
            procs.track()
            if args.kill and "killed" not in summary and progress.exists() and trigger in progress.read_text():
                time.sleep(args.kill_delay)
                summary["killed"] = {"party": args.kill, "at": trigger.strip(), "pids": procs.kill(args.kill),
                                     "seconds": time.monotonic() - t0}
                print(f"[deploy] SIGKILL {args.kill} at {trigger.strip()}", flush=True)
            if report.exists():
                data = json.loads(report.read_text())
                if len(data["rounds"]) >= args.rounds and data["rounds"][-1].get("accuracy") is not None:
                    break
            if cli_run.poll() is not None:  # flwr run returns with the run; the report follows at once
                ended = ended or time.monotonic()
                if time.monotonic() - ended > 15:
                    raise RuntimeError(f"`flwr run` exited ({cli_run.returncode}) without a complete report; see "
                                       f"cli.log and the other logs in {work}")
            if time.monotonic() - t0 > args.deadline:
                raise RuntimeError(f"no complete report within {args.deadline} s; see the logs in {work}")
            time.sleep(0.2)
        summary["seconds"] = time.monotonic() - t0
        summary["report"] = data
    finally:
        summary["cleanup"] = procs.stop()
    return summary


def check(summary: dict, args: argparse.Namespace) -> list[str]:
    """What is wrong with the run (empty: it checks out)."""
    problems = []
    rounds = summary["report"]["rounds"]
    clients = [i for i in range(args.clients)]
    for r in rounds:
        rep = r["report"]
        if r["error"] or rep is None:
            problems.append(f"round {r['round']} failed: {r['error']}")
            continue
        victim_out = args.kill and r["round"] >= args.kill_round
        idx = int(args.kill.split("/")[1]) if args.kill and args.kill.startswith("client/") else None
        want = [i for i in clients if not (victim_out and i == idx)]
        if rep["survivors"] != want:
            problems.append(f"round {r['round']}: survivors {rep['survivors']}, expected {want}")
        if victim_out and idx is not None and r["round"] == args.kill_round and \
                rep["dropped"] != {str(idx): args.kill_stage}:
            problems.append(f"round {r['round']}: dropped {rep['dropped']}, expected {{{idx}: {args.kill_stage}}}")
    if rounds and rounds[-1]["accuracy"] <= summary["report"]["initial_accuracy"] + 0.2:
        problems.append(f"accuracy {rounds[-1]['accuracy']:.3f} did not rise from "
                        f"{summary['report']['initial_accuracy']:.3f}")
    if summary["cleanup"]["still_alive"]:
        problems.append(f"processes still alive: {summary['cleanup']['still_alive']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheme", default="plaintext")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kill", default="client/2", help="the party whose SuperNode is killed ('' for none)")
    ap.add_argument("--kill-round", type=int, default=2)
    ap.add_argument("--kill-stage", default="upload", help="kill when the server sends this stage's messages")
    ap.add_argument("--kill-delay", type=float, default=0.0, help="seconds after the stage starts")
    ap.add_argument("--input-timeout", type=float, default=30.0)
    ap.add_argument("--stage-timeout", type=float, default=40.0)
    ap.add_argument("--port", type=int, default=39400)
    ap.add_argument("--deadline", type=float, default=480.0, help="give up after this many seconds")
    ap.add_argument("--simulation", action="store_true", help="Flower's simulation runtime instead of SuperNodes")
    ap.add_argument("--out", default="", help="working folder (default: a new temporary one)")
    args = ap.parse_args(argv)
    if args.simulation:
        args.kill = ""
    summary = run(args)
    summary["problems"] = check(summary, args)
    text = json.dumps({k: v for k, v in summary.items() if k != "report"} | {"rounds": [
        {k: r.get(k) for k in ("round", "accuracy", "error", "stage_seconds")} | {
            "survivors": (r["report"] or {}).get("survivors"), "dropped": (r["report"] or {}).get("dropped")}
        for r in summary["report"]["rounds"]]}, indent=1, default=str)
    print(text)
    Path(summary["work"], "summary.json").write_text(text)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
