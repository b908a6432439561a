"""Checks for engine/tests/report/run.sh (standard library only): what headless Chromium made of
a `brigade report` page. Every check raises (exit 1) with the reason.

  check.py png SHOT.png                  the screenshot is not blank
  check.py dom DOM.html RANKS [plan]     every chart, table and rank lane is in the DOM, and the
                                         page is self-contained (no script, nothing to fetch)
  check.py console CHROMIUM.err          Chromium logged no console message for the page
  check.py netlog NET.json               the page made no network request (Chromium's own
                                         background requests are not the page's)
"""

import html.parser
import json
import struct
import sys
import zlib


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def png_pixels(path):
    """(width, height, channels, rows of bytes) of an 8-bit RGB/RGBA/grey PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(f"{path}: not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    w, h, depth, colour, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        fail(f"{path}: PNG depth {depth}, colour type {colour}, interlace {interlace} not handled")
    raw = zlib.decompress(b"".join(idat))
    stride = w * channels
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, channels, rows


def cmd_png(path):
    w, h, ch, rows = png_pixels(path)
    colours, counts = set(), {}
    for row in rows[::2]:  # every other row and pixel: plenty, and twice as fast
        for x in range(0, w * ch, 2 * ch):
            px = row[x:x + min(ch, 3)]
            colours.add(px)
            counts[px] = counts.get(px, 0) + 1
    total = sum(counts.values())
    background = max(counts.values())
    drawn = 1 - background / total
    if len(colours) < 16 or drawn < 0.01:
        fail(f"{path}: looks blank: {len(colours)} colours, {drawn:.2%} of pixels off the background")
    print(f"report: {path}: {w}x{h}, {len(colours)} colours, {drawn:.1%} drawn")


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Dom(html.parser.HTMLParser):
    """Ids, the lanes inside each timeline, the tables' rows of cells, the charts' series, and
    anything the page would load."""

    def __init__(self):
        super().__init__()
        self.ids = set()
        self.stack = []  # (tag, id of the element itself or of its nearest ancestor with one)
        self.lanes = {}  # timeline id -> [data-rank of each g.lane]
        self.rows = {}  # table id -> rows with at least one <td>
        self.row = None  # [table id, has a td] of the open <tr>
        self.series = {}  # chart id -> [point count of each polyline.series]
        self.fetching = []  # what the page would load
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        inside = self.stack[-1][1] if self.stack else None
        cls = (a.get("class") or "").split()
        if tag == "g" and "lane" in cls:
            self.lanes.setdefault(inside, []).append(a.get("data-rank"))
        if tag == "polyline" and "series" in cls:
            self.series.setdefault(inside, []).append(len((a.get("points") or "").split()))
        if tag == "tr":
            self.row = [inside, False]
        if tag == "td" and self.row:
            self.row[1] = True
        if tag in ("script", "iframe", "object", "embed", "frame"):
            self.scripts += 1
        for k in ("src", "href", "xlink:href", "data", "srcset", "action"):
            v = a.get(k)
            if v is not None and not v.startswith(("#", "data:")):
                self.fetching.append(f"<{tag} {k}={v!r}>")
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh" and "url=" in (a.get("content") or "").lower():
            self.fetching.append(f"<meta refresh {a.get('content')!r}>")
        if a.get("id"):
            self.ids.add(a["id"])
            inside = a["id"]
        if tag not in VOID:
            self.stack.append((tag, inside))

    def handle_startendtag(self, tag, attrs):  # <polyline .../> in inline SVG
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag == "tr" and self.row:
            if self.row[1]:
                self.rows[self.row[0]] = self.rows.get(self.row[0], 0) + 1
            self.row = None
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return


def cmd_dom(path, ranks, plan=None):
    ranks = int(ranks)
    text = open(path, errors="replace").read()
    d = Dom()
    d.feed(text)
    want = ["chart-loss", "chart-throughput", "chart-lr", "timeline-measured", "ranks"]
    timelines = ["timeline-measured"]
    if plan:
        want += ["timeline-predicted", "stages"]
        timelines.append("timeline-predicted")
    missing = [i for i in want if i not in d.ids]
    if missing:
        fail(f"{path}: no element with id {missing} (ids: {sorted(d.ids)})")
    for chart in ["chart-loss", "chart-throughput", "chart-lr"]:
        pts = d.series.get(chart, [])
        if not pts or max(pts) < 2:
            fail(f"{path}: #{chart} draws no series (polyline.series points: {pts})")
    for t in timelines:
        lanes = d.lanes.get(t, [])
        if sorted(lanes, key=lambda r: int(r) if (r or "").isdigit() else -1) != [str(r) for r in range(ranks)]:
            fail(f"{path}: #{t} has lanes for ranks {lanes}, expected one for each of 0..{ranks - 1}")
    if d.rows.get("ranks") != ranks:
        fail(f"{path}: #ranks has {d.rows.get('ranks')} rows of cells, expected {ranks}")
    if plan and (d.rows.get("stages") or 0) < ranks:
        fail(f"{path}: #stages has {d.rows.get('stages')} rows of cells, expected at least {ranks}")
    if d.scripts:
        fail(f"{path}: the page has {d.scripts} script/iframe/object/embed elements")
    if d.fetching:
        fail(f"{path}: the page refers to things it would fetch: {d.fetching[:5]}")
    print(f"report: {path}: ids {', '.join(want)}; lanes 0..{ranks - 1} in {', '.join(timelines)}; "
          f"{d.rows.get('ranks')} rank rows" + (f", {d.rows.get('stages')} stage rows" if plan else "")
          + "; no script, nothing fetched")


def cmd_console(path):
    lines = [l.rstrip() for l in open(path, errors="replace") if ":CONSOLE" in l]
    if lines:
        fail(f"{path}: the page logged to the console (it has no script, so this is an error):\n"
             + "\n".join(lines[:20]))
    print("report: no console messages")


def cmd_netlog(path):
    raw = open(path).read()
    try:
        log = json.loads(raw)
    except ValueError:  # a log cut short (the browser exited while writing): close it
        log = json.loads(raw.rstrip().rstrip(",") + "]}")
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    page = set()
    for e in log.get("events", []):
        p = e.get("params") or {}
        # Requests a file:// page makes carry its network isolation key; Chromium's own
        # (time sync, accounts) carry none or google.com's.
        if types.get(e["type"]) == "URL_REQUEST_START_JOB" and "file://" in p.get("network_isolation_key", ""):
            page.add(p.get("url"))
    if page:
        fail(f"{path}: the page requested {sorted(page)}")
    print("report: the page made no network request")


if __name__ == "__main__":
    globals()[f"cmd_{sys.argv[1]}"](*sys.argv[2:])
