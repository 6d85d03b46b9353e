#!/usr/bin/env python3
"""Throughput beside the peers: the same N no-op tasks on 2 local one-core workers, on idlegrid,
Dask distributed and HyperQueue (its Python package's LocalCluster), timed from submission to
the last result, printed as one table (or one JSON object with --json). Beside them,
`idlegrid-swarm`: the supervisor's own throughput, 200 simulated workers of `bench swarm` over a
timed window (--swarm-duration-s), every result through the durable store.

    python3 benches/peers/peers.py [--tasks N] [--json]

The peers are installed from PyPI into a virtualenv outside the repository (by default
~/.cache/idlegrid-peers-venv), created on first use and reused afterwards. idlegrid's release
binaries must be built already (`cargo build --release --bins`; --bin-dir points elsewhere).

What a "no-op task" is differs a little by system, as each runs work its own way: idlegrid runs
its built-in `spin` kernel for 0 ms inside the worker, Dask calls a Python function returning
its argument in a worker process, HyperQueue starts the program `true` with no output files.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# The versions measured in the README; --upgrade-peers installs the newest instead.
PEERS = ["hyperqueue==0.27.0", "dask[distributed]==2026.8.0"]
WORKERS = 2
SYSTEMS = ["idlegrid", "idlegrid-swarm", "dask", "hyperqueue"]
# `idlegrid-swarm`: the supervisor alone, driven by `bench swarm` (simulated workers speaking the
# real protocol over real WebSockets, results through the durable store).
SWARM_WORKERS = 200

# Child process groups still running, killed on any exit.
_children = []


class BenchError(Exception):
    """A failure the user can act on; printed without a traceback."""


def main():
    args = parse_args()
    if args.inner:
        # Runs inside the virtualenv's Python: one peer, one JSON line on stdout.
        print(json.dumps({"seconds": INNER[args.inner](args.tasks)}), flush=True)
        return
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        results = run_all(args)
    except BenchError as e:
        print(f"peers: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        kill_children()
    report(args, results)


def parse_args():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", "-n", type=positive, default=5000, help="no-op tasks per system (default 5000)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--venv", default=os.path.join(cache, "idlegrid-peers-venv"), help="virtualenv for the peers")
    p.add_argument("--upgrade-peers", action="store_true", help="install the newest peers instead of the pinned ones")
    p.add_argument("--bin-dir", default=os.path.join(target, "release"), help="where idlegrid's release binaries are")
    p.add_argument("--timeout-s", type=positive, default=900, help="give up on one system after this long")
    p.add_argument(
        "--pause-s",
        type=int,
        default=10,
        help="seconds of rest between two systems, so that one's last processes are gone before the next "
        "starts (default 10; 0: none)",
    )
    p.add_argument(
        "--swarm-duration-s",
        type=positive,
        default=30,
        help=f"length of the idlegrid-swarm window ({SWARM_WORKERS} simulated workers, no-op tasks; default 30)",
    )
    p.add_argument(
        "--peers-sched-idle",
        action="store_true",
        help="run the peers' whole process trees at SCHED_IDLE and nice 19, as idlegrid runs its task threads "
        "(harsher: their schedulers too); a control for a busy machine",
    )
    p.add_argument("--inner", choices=sorted(INNER), help=argparse.SUPPRESS)
    args = p.parse_args()
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SYSTEMS]
    if unknown or not wanted:
        p.error(f"--systems {args.systems!r}: choose from {', '.join(SYSTEMS)}")
    args.systems = wanted
    if args.pause_s < 0:
        p.error(f"--pause-s {args.pause_s}: must be 0 or more")
    return args


def positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def run_all(args):
    results = []
    peers = [s for s in args.systems if not s.startswith("idlegrid")]
    python = ensure_venv(args) if peers else None
    args.versions = versions(python) if python else {}
    for i, system in enumerate(args.systems):
        if i > 0 and args.pause_s > 0:
            time.sleep(args.pause_s)
        what = f"{args.swarm_duration_s} s" if system == "idlegrid-swarm" else f"{args.tasks} tasks"
        log(args, f"running {what} on {system} ...")
        load_before = os.getloadavg()[0]
        if system == "idlegrid":
            row = run_idlegrid(args)
        elif system == "idlegrid-swarm":
            row = run_swarm(args)
        else:
            row = run_peer(args, python, system)
        row.setdefault("tasks", args.tasks)
        row.setdefault("workers", WORKERS)
        row.update(system=system, load_before=round(load_before, 2))
        row["tasks_per_s"] = row["tasks"] / row["seconds"]
        results.append(row)
        log(args, f"  {row['seconds']:.2f} s, {row['tasks_per_s']:.0f} tasks/s")
    return results


def log(args, line):
    print(line, file=sys.stderr, flush=True)


# --- the virtualenv ------------------------------------------------------------------------------


def ensure_venv(args):
    python = os.path.join(args.venv, "bin", "python")
    probe = [python, "-c", "import hyperqueue, distributed"]
    if not args.upgrade_peers and os.path.exists(python) and quiet(probe) == 0:
        return python
    if not os.path.exists(python):
        log(args, f"creating the peers' virtualenv in {args.venv} ...")
        made = subprocess.run([sys.executable, "-m", "venv", args.venv], capture_output=True, text=True)
        if made.returncode != 0:
            raise BenchError(
                f"could not create a virtualenv in {args.venv} (is python3-venv installed?):\n{tail(made.stderr)}"
            )
    wanted = [p.split("==")[0] for p in PEERS] if args.upgrade_peers else PEERS
    log(args, f"installing {' '.join(wanted)} from PyPI into {args.venv} ...")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if args.upgrade_peers:
        pip.append("--upgrade")
    done = subprocess.run(pip + wanted, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(
            f"pip install {' '.join(wanted)} failed (exit {done.returncode}); its last lines:\n"
            f"{tail(done.stderr or done.stdout)}\n"
            f"fix the cause or remove {args.venv} and run again"
        )
    if quiet(probe) != 0:
        raise BenchError(f"hyperqueue and distributed installed into {args.venv} but do not import")
    return python


def quiet(cmd):
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


def tail(text, lines=15):
    return "\n".join(text.strip().splitlines()[-lines:])


def versions(python):
    """The installed peers' versions, for the record."""
    code = "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in ('hyperqueue', 'distributed')}))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {}


# --- the peers, each in the virtualenv's Python in its own process group --------------------------


def run_peer(args, python, system):
    with tempfile.TemporaryDirectory(prefix=f"idlegrid-peers-{system}-") as tmp:
        err_path = os.path.join(tmp, "stderr.log")
        with open(err_path, "w") as err:
            child = spawn(
                [python, os.path.abspath(__file__), "--inner", system, "--tasks", str(args.tasks)],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=tmp,
                preexec_fn=lowest_priority if args.peers_sched_idle else None,
            )
            try:
                out, _ = child.communicate(timeout=args.timeout_s)
            except subprocess.TimeoutExpired:
                kill_children()
                raise BenchError(f"{system} did not finish {args.tasks} tasks within {args.timeout_s} s")
        forget(child)
        with open(err_path) as f:
            errors = f.read()
        lines = out.decode(errors="replace").strip().splitlines()
        if child.returncode != 0 or not lines:
            raise BenchError(f"{system} failed (exit {child.returncode}); its last lines:\n{tail(errors)}")
        try:
            return {"seconds": float(json.loads(lines[-1])["seconds"])}
        except (ValueError, KeyError, TypeError):
            raise BenchError(f"{system} printed {lines[-1]!r}, not its time")


def lowest_priority():
    """In the child before exec: what idlegrid's task threads get, inherited by all it starts."""
    os.nice(19)
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def noop(i):
    return i


def inner_dask(n):
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(WORKERS)
        client.gather(client.map(noop, range(-WORKERS, 0)))  # warm-up
        start = time.perf_counter()
        results = client.gather(client.map(noop, range(n)))
        seconds = time.perf_counter() - start
    if len(results) != n:
        raise SystemExit(f"dask returned {len(results)} results for {n} tasks")
    return seconds


def inner_hyperqueue(n):
    from hyperqueue import Job, LocalCluster
    from hyperqueue.cluster import WorkerConfig

    def job(count):
        j = Job()
        for _ in range(count):
            # Without stdout/stderr None every task leaves two files in the current directory.
            j.program(["true"], stdout=None, stderr=None)
        return j

    # The cwd is a temporary directory of the parent's, removed afterwards.
    with LocalCluster(server_dir=os.path.join(os.getcwd(), "hq-server")) as cluster:
        for _ in range(WORKERS):
            cluster.start_worker(WorkerConfig(cores=1))
        client = cluster.client()
        client.wait_for_jobs([client.submit(job(WORKERS))])  # warm-up: a worker is connected
        timed = job(n)
        start = time.perf_counter()
        client.wait_for_jobs([client.submit(timed)])
        return time.perf_counter() - start


INNER = {"dask": inner_dask, "hyperqueue": inner_hyperqueue}


# --- idlegrid ------------------------------------------------------------------------------------


def run_swarm(args):
    """The supervisor's own throughput: `bench swarm` with SWARM_WORKERS simulated workers for
    --swarm-duration-s, tasks acknowledged (stored) in that window."""
    supervisor = os.path.join(args.bin_dir, "idlegrid-supervisor")
    if not os.access(supervisor, os.X_OK):
        raise BenchError(f"{supervisor} not found: build with `cargo build --release --bins` or pass --bin-dir")
    cmd = [supervisor, "bench", "swarm", "--workers", str(SWARM_WORKERS), "--heartbeat-ms", "1000",
           "--duration-s", str(args.swarm_duration_s), "--json"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.swarm_duration_s + 300)
    except subprocess.TimeoutExpired:
        raise BenchError(f"bench swarm did not end within {args.swarm_duration_s + 300} s")
    if done.returncode != 0:
        raise BenchError(f"bench swarm failed ({done.returncode}):\n{tail(done.stderr)}")
    try:
        r = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"bench swarm printed no JSON:\n{tail(done.stdout)}")
    if r.get("results_wrong") or r.get("dropped") or r.get("false_loss_notices"):
        raise BenchError(f"bench swarm saw faults: {done.stdout.strip()}")
    return {
        "tasks": r["completed"],
        "seconds": r["duration_s"],
        "workers": SWARM_WORKERS,
        "supervisor_cpu_percent": r["supervisor"]["cpu_percent"],
    }


def run_idlegrid(args):
    supervisor = os.path.join(args.bin_dir, "idlegrid-supervisor")
    client = os.path.join(args.bin_dir, "idlegrid")
    for binary in (supervisor, client):
        if not os.access(binary, os.X_OK):
            raise BenchError(f"{binary} not found: build with `cargo build --release --bins` or pass --bin-dir")
    with tempfile.TemporaryDirectory(prefix="idlegrid-peers-idlegrid-") as tmp:
        data = os.path.join(tmp, "data")
        sup_log = open(os.path.join(tmp, "supervisor.log"), "w")
        sup = spawn(
            [supervisor, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
            stdout=subprocess.PIPE,
            stderr=sup_log,
        )
        first = sup.stdout.readline().decode(errors="replace")
        if "http://" not in first:
            raise BenchError(f"idlegrid-supervisor did not start: {first!r}\n{tail(read(sup_log.name))}")
        addr = first.split("http://", 1)[1].split()[0]
        url = f"http://{addr}"
        for name in ("w1", "w2"):
            spawn(
                [client, "--headless", "--run-while-in-use", "--cpus", "1",
                 "--server", f"ws://{addr}/worker", "--token-file", os.path.join(data, "worker.token"),
                 "--data-dir", os.path.join(tmp, f"{name}.client"), "--name", name],
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(tmp, f"{name}.log"), "w"),
            )
        token_file = os.path.join(data, "operator.token")
        wait_for_workers(url, token_file, tmp)

        def submit(count, label):
            manifest = os.path.join(tmp, f"{label}.toml")
            write_manifest(manifest, label, count)
            cmd = [supervisor, "submit", manifest, "--server", url, "--token-file", token_file, "--wait", "--json"]
            start = time.perf_counter()
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
            except subprocess.TimeoutExpired:
                raise BenchError(f"idlegrid did not finish {count} tasks within {args.timeout_s} s")
            seconds = time.perf_counter() - start
            try:
                rep = json.loads(done.stdout)
            except ValueError:
                raise BenchError(f"idlegrid submit failed (exit {done.returncode}):\n{tail(done.stderr)}")
            if rep.get("state") != "completed" or rep.get("tasks_done") != count:
                raise BenchError(f"idlegrid job ended {rep.get('state')} with {rep.get('tasks_done')} of {count} tasks done")
            return seconds, rep

        submit(WORKERS, "warm-up")
        seconds, rep = submit(args.tasks, "noop")
        kill_children()
        return {
            "seconds": seconds,
            "makespan_ms": rep.get("makespan_ms"),
            "replicas_started": rep.get("replicas_started"),
        }


def write_manifest(path, name, count):
    with open(path, "w") as f:
        f.write(f'name = "{name}"\n')
        for i in range(count):
            f.write(f'\n[[task]]\nid = "t{i}"\nkind = "spin"\ninput = {{ ms = 0 }}\n')


def wait_for_workers(url, token_file, tmp, timeout_s=30):
    with open(token_file) as f:
        token = f.read().strip()
    deadline = time.monotonic() + timeout_s
    live = []
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"{url}/api/workers", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                live = [w for w in json.load(resp) if w.get("state") == "live"]
        except OSError:
            live = []
        if len(live) >= WORKERS:
            return
        time.sleep(0.1)
    logs = "\n".join(f"{n}: {tail(read(os.path.join(tmp, n + '.log')), 5)}" for n in ("w1", "w2"))
    raise BenchError(f"only {len(live)} of {WORKERS} idlegrid workers connected within {timeout_s} s:\n{logs}")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# --- child processes -----------------------------------------------------------------------------


def spawn(cmd, **kw):
    """Starts cmd in its own process group, so that it and all it starts can be ended together."""
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    _children.append(child)
    return child


def forget(child):
    if child in _children:
        _children.remove(child)


def kill_children():
    for child in reversed(_children):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                break
            try:
                child.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        # The group may outlive its leader (Dask's worker processes): end what is left of it.
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _children.clear()


def _on_signal(signum, _frame):
    kill_children()
    sys.exit(128 + signum)


# --- output --------------------------------------------------------------------------------------


def report(args, results):
    base = next((r["tasks_per_s"] for r in results if r["system"] == "idlegrid"), None)
    for r in results:
        r["ratio_to_idlegrid"] = r["tasks_per_s"] / base if base else None
    hq_note = "hq binary not measured: the hyperqueue PyPI package ships only its Python module, not `hq`"
    if args.json:
        out = {
            "tasks": args.tasks,
            "workers": WORKERS,
            "peers_sched_idle": args.peers_sched_idle,
            "versions": args.versions,
            "results": results,
            "notes": [hq_note],
        }
        print(json.dumps(out, indent=2))
        return
    print(f"{'system':<15} {'workers':>7} {'tasks':>8} {'seconds':>9} {'tasks/s':>9} {'ratio to idlegrid':>18} {'load':>5}")
    for r in results:
        ratio = f"{r['ratio_to_idlegrid']:.2f}" if r["ratio_to_idlegrid"] is not None else "-"
        print(
            f"{r['system']:<15} {r['workers']:>7} {r['tasks']:>8} {r['seconds']:>9.2f} {r['tasks_per_s']:>9.0f} {ratio:>18} {r['load_before']:>5.1f}"
        )
    shown = ", ".join(f"{k} {v}" for k, v in args.versions.items())
    idle = "; peers at SCHED_IDLE" if args.peers_sched_idle else ""
    print(f"({WORKERS} local one-core workers each, but idlegrid-swarm: {SWARM_WORKERS} simulated workers against the "
          f"supervisor, tasks stored in a timed window; load: 1-min load average before the run; {shown}{idle})")
    print(f"({hq_note})")


if __name__ == "__main__":
    main()
