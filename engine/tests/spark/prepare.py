"""The Spark test's data job: prepares the digits for brigade as a Spark job on raw data would.

It spreads the pixels into 64 columns (the shape raw tabular data has), then builds the
`array<float>` feature column and an `int` label again and writes Parquet directories of
part files (train: 3 parts, test: 1), as Spark writes them on YARN or locally.

usage: spark-submit prepare.py DATA_DIR OUT_DIR   (DATA_DIR holds train.parquet, test.parquet)
"""
import sys

from pyspark.sql import SparkSession, functions as F

src, out = sys.argv[1:3]
spark = SparkSession.builder.appName("brigade-prepare-digits").getOrCreate()
for split, parts in (("train", 3), ("test", 1)):
    raw = spark.read.parquet(f"{src}/{split}.parquet").select(
        *[F.col("features")[i].alias(f"p{i}") for i in range(64)], "label"
    )
    data = raw.select(
        F.array(*[F.col(f"p{i}") for i in range(64)]).cast("array<float>").alias("features"),
        F.col("label").cast("int").alias("label"),
    ).na.drop()
    data.repartition(parts).write.mode("overwrite").parquet(f"{out}/{split}")
spark.stop()
