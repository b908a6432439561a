"""The Spark test's driver: trains a plan with brigade_spark on local-cluster executors."""
import sys

from pyspark.sql import SparkSession

import brigade_spark

plan, brigade, steps, ckpt = sys.argv[1:5]
spark = (
    SparkSession.builder.appName("brigade-spark-test")
    .config("spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures", "1")
    .getOrCreate()
)
ranks = brigade_spark.train(
    spark, plan, brigade=brigade, steps=int(steps), checkpoint_dir=ckpt, checkpoint_every=5,
    connect_timeout=60,
)
print(f"brigade_spark: ranks {ranks} finished", file=sys.stderr)
spark.stop()
