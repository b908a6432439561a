"""Helpers for engine/tests/tracking/run.sh: read a run back from a real MLflow server with
MLflow's own client and check it against brigade's metrics file, and stand in for broken
servers. Run with the venv's Python (it has mlflow); every check raises (exit 1) with the reason.

  check.py free-port
  check.py health URI SECS                           wait until URI/health answers 200
  check.py runs URI EXPERIMENT                       run ids in EXPERIMENT, one a line
  check.py wait-run URI EXPERIMENT BEFORE MIN SECS   the one new run (not in file BEFORE) once it
                                                     has MIN loss values; prints its id
  check.py finished URI RUN METRICS TRACE REPORT STDERR [RUN_NAME]
                                                     the full check of a finished run
  check.py status URI RUN STATUS [failure-tag]       the run ended with STATUS (and the tag)
  check.py losses URI RUN METRICS                    every step's loss is in MLflow, once
  check.py same-losses A.jsonl B.jsonl               two metrics files have equal losses
  check.py quiet-warnings STDERR STEPS               mlflow warned once, not once per step
  check.py serve 500|garbage PORT                    a broken "server" (runs until killed)
"""

import http.server
import json
import math
import os
import re
import socket
import sys
import time


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def metrics_lines(path):
    """(steps, evals) of a metrics file: {step: line} for step lines and eval lines."""
    steps, evals = {}, {}
    for n, line in enumerate(open(path), 1):
        if not line.strip():
            continue
        m = json.loads(line)
        if "loss" in m:
            steps[m["step"]] = m
        elif "val_loss" in m:
            evals[m["step"]] = m
    return steps, evals


def close(a, b, rel=1e-6):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(a - b) <= rel * max(1.0, abs(b))


def history(c, run, key):
    """{step: [values]} of a metric's history."""
    out = {}
    for m in c.get_metric_history(run, key):
        out.setdefault(m.step, []).append(m.value)
    return out


def check_series(c, run, key, want, what):
    """MLflow's history of `key` is exactly one value per step of `want` ({step: value}), equal."""
    got = history(c, run, key)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing:
        fail(f"{what}: {key} missing at {len(missing)} steps (first: {missing[:10]})")
    if extra:
        fail(f"{what}: {key} logged at steps brigade did not write: {extra[:10]}")
    twice = [s for s, v in got.items() if len(v) != 1]
    if twice:
        fail(f"{what}: {key} logged more than once at steps {twice[:10]}: {[got[s] for s in twice[:3]]}")
    for s, v in want.items():
        if not close(got[s][0], v):
            fail(f"{what}: {key} at step {s} is {got[s][0]} in MLflow, {v} in the metrics file")


def cmd_free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_health(uri, secs):
    import urllib.request

    deadline = time.time() + float(secs)
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    fail(f"{uri}/health did not answer 200 within {secs} s")


def experiment_runs(c, name):
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return []
    return [r.info.run_id for r in c.search_runs([exp.experiment_id], max_results=1000)]


def cmd_runs(uri, name):
    for r in experiment_runs(client(uri), name):
        print(r)


def cmd_wait_run(uri, name, before, least, secs):
    c = client(uri)
    old = set(open(before).read().split())
    deadline = time.time() + float(secs)
    new = []
    while time.time() < deadline:
        try:
            new = [r for r in experiment_runs(c, name) if r not in old]
        except Exception as e:  # the server may be slow to answer while training starts
            print(f"(waiting: {e})", file=sys.stderr)
            new = []
        if len(new) > 1:
            fail(f"{len(new)} new runs in experiment {name}, expected one: {new}")
        if new and len(c.get_metric_history(new[0], "loss")) >= int(least):
            print(new[0])
            return
        time.sleep(0.5)
    fail(f"no run in experiment {name} with {least} loss values within {secs} s (new runs: {new})")


def run_id_in(stderr_path):
    """brigade's run id as `train` prints it: `... (run 0123456789abcdef)`."""
    m = re.search(r"\(run ([0-9a-f]{16})\)", open(stderr_path, errors="replace").read())
    return m.group(1) if m else None


def cmd_finished(uri, run, metrics, trace, report, stderr, run_name=None):
    c = client(uri)
    r = c.get_run(run)
    what = f"run {run}"
    if r.info.status != "FINISHED":
        fail(f"{what}: status {r.info.status}, expected FINISHED")
    if not r.info.end_time:
        fail(f"{what}: no end_time")
    if run_name and r.info.run_name != run_name:
        fail(f"{what}: run name {r.info.run_name!r}, expected {run_name!r}")

    # Identity.
    tag = r.data.tags.get("brigade.run_id", "")
    if not tag:
        fail(f"{what}: no brigade.run_id tag (tags: {sorted(r.data.tags)})")
    printed = run_id_in(stderr)
    if printed and tag != printed:
        fail(f"{what}: tag brigade.run_id is {tag!r}, but train printed run {printed}")

    # Params: the plan's summary and the topology's keys.
    p = r.data.params
    for key in ["plan.stages", "plan.schedule", "plan.microbatches", "plan.replicas",
                "plan.predicted_step_ms", "plan.predicted_bubble", "train.lr", "train.batch"]:
        if key not in p:
            fail(f"{what}: no param {key} (params: {sorted(p)})")
    if p["plan.stages"] != "2":
        fail(f"{what}: plan.stages = {p['plan.stages']!r}, expected 2")
    if "gpipe" not in p["plan.schedule"].lower():
        fail(f"{what}: plan.schedule = {p['plan.schedule']!r}, expected gpipe")
    if p["plan.microbatches"] != "8" or p["plan.replicas"] != "1":
        fail(f"{what}: plan.microbatches/replicas = {p['plan.microbatches']}/{p['plan.replicas']}, expected 8/1")
    if float(p["train.lr"]) != 0.01 or p["train.batch"] != "64":
        fail(f"{what}: train.lr/batch = {p['train.lr']}/{p['train.batch']}, expected 0.01/64")
    float(p["plan.predicted_step_ms"]), float(p["plan.predicted_bubble"])

    # Every step's metrics, once each, equal to the metrics file.
    steps, evals = metrics_lines(metrics)
    if not steps or sorted(steps) != list(range(1, len(steps) + 1)):
        fail(f"{metrics}: steps are not 1..N: {sorted(steps)[:5]}…")
    for key in ["loss", "samples_per_sec", "step_ms", "lr"]:
        want = {s: m[key] for s, m in steps.items() if key in m}
        if key in ("loss", "lr") and len(want) != len(steps):
            fail(f"{metrics}: not every step line has {key}")
        if want:
            check_series(c, run, key, want, what)
    if not evals:
        fail(f"{metrics}: no evaluation lines (give the run an [eval])")
    for key in ["val_loss", "val_accuracy"]:
        check_series(c, run, key, {s: m[key] for s, m in evals.items()}, what)

    # Artifacts, under their basenames; the metrics file as it is on disk.
    names = {a.path: a for a in c.list_artifacts(run)}
    for want in ["plan.json", os.path.basename(metrics), os.path.basename(trace),
                 os.path.basename(report)]:
        if want not in names:
            fail(f"{what}: no artifact {want} (artifacts: {sorted(names)})")
        if names[want].is_dir or not names[want].file_size:
            fail(f"{what}: artifact {want} is empty or a directory")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        got = c.download_artifacts(run, os.path.basename(metrics), d)
        if open(got, "rb").read() != open(metrics, "rb").read():
            fail(f"{what}: artifact {os.path.basename(metrics)} differs from {metrics}")
        plan = json.load(open(c.download_artifacts(run, "plan.json", d)))
        if not isinstance(plan, dict):
            fail(f"{what}: plan.json is not a JSON object")
    print(f"tracking: run {run} FINISHED: {len(p)} params, {len(steps)} steps of loss/step_ms/"
          f"samples_per_sec/lr, {len(evals)} evaluations, artifacts {sorted(names)}")


def cmd_status(uri, run, status, failure_tag=None):
    r = client(uri).get_run(run)
    if r.info.status != status:
        fail(f"run {run}: status {r.info.status}, expected {status} (tags: {r.data.tags})")
    if not r.info.end_time:
        fail(f"run {run}: no end_time")
    if failure_tag:
        cause = r.data.tags.get("brigade.failure", "")
        if not cause.strip():
            fail(f"run {run}: no brigade.failure tag (tags: {r.data.tags})")
        print(f"tracking: run {run} {status}, brigade.failure = {cause!r}")
    else:
        print(f"tracking: run {run} {status}")


def cmd_losses(uri, run, metrics):
    steps, _ = metrics_lines(metrics)
    check_series(client(uri), run, "loss", {s: m["loss"] for s, m in steps.items()}, f"run {run}")
    print(f"tracking: run {run} has the loss of every step 1..{max(steps)}, once each")


def cmd_same_losses(a, b):
    la = [m["loss"] for _, m in sorted(metrics_lines(a)[0].items())]
    lb = [m["loss"] for _, m in sorted(metrics_lines(b)[0].items())]
    if not la or la != lb:
        fail(f"losses differ: {a} has {len(la)} steps, {b} {len(lb)}; first difference at step "
             f"{next((i + 1 for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)) + 1)}")
    print(f"tracking: {len(la)} losses equal those of the run without tracking")


def cmd_quiet_warnings(stderr, steps):
    """One warning about the server however many steps ran, plus at most the final account."""
    lines = [l.rstrip() for l in open(stderr, errors="replace") if "mlflow" in l.lower()]
    final = [l for l in lines if "did not reach" in l]
    warnings = [l for l in lines if "warn" in l.lower() and "did not reach" not in l]
    if len(warnings) != 1:
        fail(f"{stderr}: {len(warnings)} warnings about mlflow during {steps} steps, expected one:\n"
             + "\n".join(warnings[:20]))
    if len(lines) > 5:
        fail(f"{stderr}: {len(lines)} lines about mlflow during {steps} steps:\n" + "\n".join(lines[:20]))
    if len(final) > 1:
        fail(f"{stderr}: {len(final)} 'did not reach' lines:\n" + "\n".join(final))
    print(f"tracking: one warning over {steps} steps: {warnings[0]}"
          + (f"; at the end: {final[0]}" if final else ""))


class Broken(http.server.BaseHTTPRequestHandler):
    mode = "500"
    protocol_version = "HTTP/1.1"

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.mode == "500":
            code, body, kind = 500, b"Internal Server Error", "text/plain"
        else:  # 200, but not MLflow's JSON
            code, body, kind = 200, b"<html><body>hello from a proxy</body></html>\n", "text/html"
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))


def cmd_serve(mode, port):
    Broken.mode = mode
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Broken)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    cmd, args = sys.argv[1].replace("-", "_"), sys.argv[2:]
    globals()[f"cmd_{cmd}"](*args)
