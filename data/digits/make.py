"""Makes data/digits/{train,test}.parquet: the UCI handwritten digits (1,797 images of 8×8
pixels, values 0–16, 10 classes) as shipped inside the scikit-learn wheel
(`sklearn/datasets/data/digits.csv.gz`, BSD-3 package; data from the UCI Machine Learning
Repository, "Optical Recognition of Handwritten Digits", Alpaydin & Kaynak, 1998).

Layout, as a Spark job writes it: `features` is a nullable list<float32> of 64 pixels scaled to
[0, 1], `label` an int64 class id. 80/20 split with a fixed seed, so the files are reproducible.

    python3 -m venv venv && venv/bin/pip install pyarrow numpy
    venv/bin/pip download --no-deps scikit-learn -d wheels
    venv/bin/python data/digits/make.py wheels/scikit_learn-*.whl
"""

import csv
import gzip
import io
import os
import sys
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 7
TEST_FRACTION = 0.2


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        raw = gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz"))
    rows = [list(map(float, r)) for r in csv.reader(io.StringIO(raw.decode()))]
    data = np.array(rows, dtype=np.float32)
    x, y = data[:, :64] / 16.0, data[:, 64].astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    n_test = int(len(y) * TEST_FRACTION)
    out = os.path.dirname(os.path.abspath(__file__))
    for name, idx in [("test", order[:n_test]), ("train", order[n_test:])]:
        table = pa.table(
            {
                "features": pa.array(list(x[idx]), type=pa.list_(pa.float32())),
                "label": pa.array(y[idx], type=pa.int64()),
            }
        )
        path = os.path.join(out, f"{name}.parquet")
        pq.write_table(table, path, compression="snappy", row_group_size=256)
        print(f"{path}: {len(idx)} rows, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
