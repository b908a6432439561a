"""The driver side and the task side of ``brigade_spark.train``."""

import json
import os
import socket
import sys
import threading

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover
    tomllib = None


def ranks_of(plan_text):
    """How many ranks a job plan (JSON) or topology (TOML) has."""
    text = plan_text.lstrip()
    if text.startswith("{"):
        return len(json.loads(text)["ranks"])
    if tomllib is None:
        raise RuntimeError("reading a topology needs Python 3.11 (tomllib); give a job plan")
    partition = tomllib.loads(plan_text).get("partition", {})
    replicas = partition.get("replicas", 1)
    if not isinstance(replicas, int):
        raise RuntimeError('replicas = "auto" is chosen by the planner: give a job plan (brigade plan --out)')
    return int(partition.get("stages", 1)) * replicas


def _serve_events(out):
    """A socket on the driver that prints every line the tasks send, as it arrives."""
    srv = socket.create_server(("0.0.0.0", 0))
    srv.settimeout(None)

    def pump(conn):
        with conn, conn.makefile("r", encoding="utf-8", errors="replace") as f:
            for line in f:
                out.write(line if line.endswith("\n") else line + "\n")
                out.flush()

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=pump, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


def train(
    spark,
    plan,
    *,
    brigade="brigade",
    steps=None,
    run_id=None,
    checkpoint_dir=None,
    checkpoint_every=50,
    secret=None,
    secret_file=None,
    connect_timeout=120,
    extra_args=(),
    out=None,
):
    """Trains the job plan (or topology) file ``plan`` with one barrier task per rank.

    ``plan`` is read on the driver and shipped to the tasks, so it need not be on shared
    storage; ``checkpoint_dir`` must be (every attempt resumes from it). ``secret`` (or a
    ``secret_file`` readable on the executors) enables CURVE between executors; without one,
    brigade accepts loopback peers only. Raises ``RuntimeError`` naming the failed rank.
    """
    out = out or sys.stdout
    with open(plan, encoding="utf-8") as f:
        text = f.read()
    ranks = ranks_of(text)
    sc = spark.sparkContext
    run_id = run_id or f"spark-{sc.applicationId}"
    name = os.path.basename(plan)
    driver_host = sc.getConf().get("spark.driver.host", socket.gethostname())
    srv = _serve_events(out)
    events = (driver_host, srv.getsockname()[1])
    args = {
        "brigade": brigade,
        "text": text,
        "name": name,
        "steps": steps,
        "run_id": run_id,
        "checkpoint_dir": checkpoint_dir,
        "checkpoint_every": checkpoint_every,
        "secret": secret,
        "secret_file": secret_file,
        "connect_timeout": connect_timeout,
        "extra_args": list(extra_args),
        "events": events,
    }
    try:
        # The shuffle after the barrier stage lets Spark re-run the whole gang when a rank
        # fails (a failed barrier *result* stage is not retried).
        results = (
            sc.parallelize(range(ranks), ranks)
            .barrier()
            .mapPartitions(lambda it: _task(args))
            .map(lambda r: (0, r))
            .groupByKey(1)
            .mapValues(list)
            .collect()
        )
    finally:
        srv.close()
    return sorted(results[0][1]) if results else []


def _die_with_parent():
    """In the child: be killed when the Spark task's Python worker dies."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the task's kill of the process group still applies
        pass


def _task(a):
    import subprocess
    import tempfile

    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    rank = ctx.partitionId()
    # The address other ranks reach this task at, and a free port on it.
    host = ctx.getTaskInfos()[rank].address.rsplit(":", 1)[0]
    ip = socket.gethostbyname(host)
    with socket.socket() as s:
        s.bind((ip, 0))
        port = s.getsockname()[1]
    peers = ctx.allGather(f"{ip}:{port}")
    workdir = tempfile.mkdtemp(prefix=f"brigade-spark-{rank}-")
    plan = os.path.join(workdir, a["name"])
    with open(plan, "w", encoding="utf-8") as f:
        f.write(a["text"])
    cmd = [
        a["brigade"], "stage", plan, "--stage", str(rank), "--peers", ",".join(peers),
        "--run-id", a["run_id"], "--connect-timeout", str(a["connect_timeout"]),
    ]
    if a["steps"] is not None:
        cmd += ["--steps", str(a["steps"])]
    if a["checkpoint_dir"]:
        cmd += ["--checkpoint-dir", a["checkpoint_dir"],
                "--checkpoint-every", str(a["checkpoint_every"]), "--resume"]
    if a["secret_file"]:
        cmd += ["--secret-file", a["secret_file"]]
    cmd += a["extra_args"]
    env = dict(os.environ)
    # The cores Spark gave this task (spark.task.cpus): the rank computes on as many threads.
    try:
        cpus = int(ctx.cpus())
    except Exception:  # Spark before 3.3 does not say
        cpus = 0
    if cpus > 0:
        env["BRIGADE_TASK_CPUS"] = str(cpus)
    if a["secret"]:
        env["BRIGADE_SECRET"] = a["secret"]
    sink = socket.create_connection(tuple(a["events"]))
    error = None
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        preexec_fn=_die_with_parent, text=True,
    )

    def forward_stderr():
        for line in proc.stderr:
            sys.stderr.write(f"[rank {rank}] {line}")

    threading.Thread(target=forward_stderr, daemon=True).start()
    for line in proc.stdout:
        sink.sendall(line.encode("utf-8"))
        try:
            ev = json.loads(line)
            if ev.get("event") == "error":
                error = ev.get("message")
        except ValueError:
            pass
    code = proc.wait()
    sink.close()
    if code != 0:
        raise RuntimeError(
            f"brigade rank {rank} exited with code {code}: {error or 'see the task log'}"
        )
    yield rank
