"""Settings of a run spec that do not change its results: they stay out of the run id and out
of the report's grouping. A module of its own, without imports, so that ``clbench report``
reads them without importing torch."""

NOT_IN_RUN_ID = ("device", "eval_batch_size")  # train settings: where it runs, how it is evaluated in chunks
SCENARIO_NOT_IN_RUN_ID = ("data_root", "download")  # where the data live, not what they are
