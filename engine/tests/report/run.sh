#!/usr/bin/env bash
# `brigade report` opened in a real browser: the reports of a 2-rank quickstart run and of a
# 4-rank interleaved-1F1B run (mlp-8x1024 on four CPU ranks), each made from `train --metrics
# --trace` and `brigade plan --out`, are loaded in headless Chromium (check.py beside this file):
#   - the screenshot is not blank (PNG decoded with zlib: colours and drawn share);
#   - the DOM (--dump-dom) has #chart-loss, #chart-throughput, #chart-lr with a drawn series,
#     #timeline-measured and #timeline-predicted with one g.lane per rank (data-rank 0..R-1),
#     table#stages and table#ranks (one row per rank);
#   - the page is self-contained: no script, nothing to load, no network request in Chromium's
#     net log, no console message in Chromium's log;
# and a malformed metrics file or trace is exit 2 naming the file and line, writing nothing.
# Installs Debian's chromium when missing and run as root (else: SKIP, or under CI=true FAIL,
# see engine/tests/skip.sh). BRIGADE_UPDATE_SCREENSHOTS=1 copies the screenshots to
# docs/images/report-quickstart.png and docs/images/report-interleaved.png.
#
# usage: engine/tests/report/run.sh PATH/TO/brigade
set -euo pipefail
BRIGADE=$(realpath "${1:?usage: $0 PATH/TO/brigade}")
cd "$(dirname "$0")/../../.."
. engine/tests/skip.sh

CHROMIUM=$(command -v chromium || true)
if [ -z "$CHROMIUM" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "report: installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } || true
  CHROMIUM=$(command -v chromium || true)
fi
[ -n "$CHROMIUM" ] ||
  skip_or_fail "report test" "chromium" "apt-get install --no-install-recommends chromium, as root"
if ! "$BRIGADE" report --help >/dev/null 2>&1; then
  echo "FAIL: $BRIGADE has no report command" >&2
  exit 1
fi
CHECK=(python3 engine/tests/report/check.py)
unset BRIGADE_SECRET BRIGADE_SECRET_FILE

WORK=$(mktemp -d)
mkdir -p "$WORK/tmp"
export TMPDIR=$WORK/tmp # brigade's run directories and Chromium's profiles stay in here
trap 'rm -rf "$WORK"' EXIT

# Headless Chromium with nothing of its own running: no GPU, sync, updates or first-run pages.
browse() {
  timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d)" --enable-logging=stderr --v=0 --window-size=1400,2400 "$@"
}

# Opens report $2 in Chromium and checks it: $1 a name for the outputs, $3 the number of ranks.
look_at() {
  local name=$1 page=$2 ranks=$3 out=$WORK/$1
  browse --log-net-log="$out.net.json" --screenshot="$out.png" "file://$page" \
    >"$out.shot.out" 2>"$out.shot.err" || { echo "FAIL: chromium --screenshot"; cat "$out.shot.err"; exit 1; }
  [ -s "$out.png" ] || { echo "FAIL: no screenshot"; cat "$out.shot.err"; exit 1; }
  browse --dump-dom "file://$page" >"$out.dom.html" 2>"$out.dom.err" ||
    { echo "FAIL: chromium --dump-dom"; cat "$out.dom.err"; exit 1; }
  "${CHECK[@]}" png "$out.png"
  "${CHECK[@]}" dom "$out.dom.html" "$ranks" plan
  "${CHECK[@]}" console "$out.shot.err"
  "${CHECK[@]}" console "$out.dom.err"
  "${CHECK[@]}" netlog "$out.net.json"
}

echo "report: quickstart, 2 ranks, 40 steps with evaluations at 20 and 40"
Q=$WORK/quickstart
mkdir -p "$Q"
"$BRIGADE" train topologies/quickstart.toml --steps 40 --set eval.every=20 \
  --metrics "$Q/metrics.jsonl" --trace "$Q/trace.json" >/dev/null 2>"$Q/train.err" ||
  { cat "$Q/train.err"; exit 1; }
"$BRIGADE" plan topologies/quickstart.toml --out "$Q/job.json" >/dev/null 2>"$Q/plan.err" ||
  { cat "$Q/plan.err"; exit 1; }
"$BRIGADE" report --metrics "$Q/metrics.jsonl" --trace "$Q/trace.json" --plan "$Q/job.json" \
  --out "$Q/report.html" >/dev/null
look_at quickstart "$Q/report.html" 2

echo "report: mlp-8x1024 on 4 ranks, interleaved 1F1B (2 chunks per rank), 8 steps"
I=$WORK/interleaved
mkdir -p "$I"
sed -e '0,/^name = /s/^name = .*/name = "mlp-8x1024-interleaved"/' \
  -e 's/^devices = \["cpu", "cpu"\]$/devices = ["cpu", "cpu", "cpu", "cpu"]/' \
  -e 's/^stages = 2$/stages = 4/' \
  -e 's/^schedule = "gpipe"$/schedule = "interleaved-1f1b"/' \
  topologies/mlp-8x1024.toml >"$I/topology.toml"
for want in 'devices = \["cpu", "cpu", "cpu", "cpu"\]' '^stages = 4$' '^schedule = "interleaved-1f1b"$'; do
  grep -q "$want" "$I/topology.toml" ||
    { echo "FAIL: topologies/mlp-8x1024.toml changed; cannot make it 4 interleaved ranks ($want)"; exit 1; }
done
"$BRIGADE" train "$I/topology.toml" --steps 8 --metrics "$I/metrics.jsonl" --trace "$I/trace.json" \
  >/dev/null 2>"$I/train.err" || { cat "$I/train.err"; exit 1; }
"$BRIGADE" plan "$I/topology.toml" --out "$I/job.json" >/dev/null 2>"$I/plan.err" ||
  { cat "$I/plan.err"; exit 1; }
"$BRIGADE" report --metrics "$I/metrics.jsonl" --trace "$I/trace.json" --plan "$I/job.json" \
  --out "$I/report.html" >/dev/null
look_at interleaved "$I/report.html" 4

if [ "${BRIGADE_UPDATE_SCREENSHOTS:-}" = 1 ]; then
  mkdir -p docs/images
  cp "$WORK/quickstart.png" docs/images/report-quickstart.png
  cp "$WORK/interleaved.png" docs/images/report-interleaved.png
  echo "report: screenshots copied to docs/images/report-quickstart.png, report-interleaved.png"
fi

# A bad input is exit 2, and the message names the file and the line.
refused() { # $1 the file to name, $2 what must follow its name; the rest: report's arguments
  local file=$1 where=$2 rc=0
  shift 2
  "$BRIGADE" report "$@" --out "$WORK/bad.html" >/dev/null 2>"$WORK/bad.err" || rc=$?
  [ "$rc" = 2 ] || { echo "FAIL: report exited $rc on $file, expected 2"; cat "$WORK/bad.err"; exit 1; }
  grep -qF "$file$where" "$WORK/bad.err" ||
    { echo "FAIL: the message does not name $file$where:"; cat "$WORK/bad.err"; exit 1; }
  [ ! -e "$WORK/bad.html" ] || { echo "FAIL: report wrote a page for a bad $file"; exit 1; }
  echo "report: $file refused: $(head -1 "$WORK/bad.err")"
}
head -2 "$Q/metrics.jsonl" >"$WORK/bad-metrics.jsonl"
printf '{"step": 3, "loss":\n' >>"$WORK/bad-metrics.jsonl"
refused "$WORK/bad-metrics.jsonl" ":3:" --metrics "$WORK/bad-metrics.jsonl"
printf '{"traceEvents": [\n{"ph": "X",\n' >"$WORK/bad-trace.json"
refused "$WORK/bad-trace.json" ":3:" --metrics "$Q/metrics.jsonl" --trace "$WORK/bad-trace.json"
echo "report: all passed"
