"""Run a brigade job as one Spark barrier stage: one task per rank.

    from pyspark.sql import SparkSession
    import brigade_spark
    spark = SparkSession.builder.getOrCreate()
    brigade_spark.train(spark, "job.json", checkpoint_dir="hdfs-or-shared/ckpt")

Each task binds a port, shares ``host:port`` with the others through ``allGather``, and runs
``brigade stage PLAN --stage <partition> --peers <every host:port>`` (the ``brigade`` binary on
the executors' ``PATH``, or the path given). The subprocess dies with its task. Every rank's
JSON events are streamed, one per line and unchanged, to the driver's standard output as they
happen. Any failed rank fails the barrier stage; a shuffle after it makes Spark retry the whole
gang (``spark.stage.maxConsecutiveAttempts``), and with a checkpoint directory every attempt
resumes from the newest complete checkpoint.
"""

from .train import train, ranks_of

__all__ = ["train", "ranks_of"]
__version__ = "0.1.0"
