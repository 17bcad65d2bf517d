"""Settings of a run spec that do not change its results: they stay out of the run id and out
of the report's grouping. A module of its own, without imports, so that ``clbench report``
reads them without importing torch."""

NOT_IN_RUN_ID = ("device", "eval_batch_size")  # train settings: where it runs, how it is evaluated in chunks
SCENARIO_NOT_IN_RUN_ID = ("data_root", "download")  # where the data live, not what they are

# train settings added after runs were recorded: at these values (their defaults) they stay out of
# the run id and of the report's grouping, so that earlier runs keep their ids and share rows
TRAIN_ADDED_LATER = {"eval_head": "logits", "eval_every": 0, "eval_subsample": 200}
# stream parameters added after runs were recorded (scenarios.selection), the same way
SCENARIO_ADDED_LATER = {"task_range": None, "val_fraction": None}


def train_identity(train: dict) -> dict:
    """The train settings that identify a run's results."""
    return {k: v for k, v in train.items()
            if k not in NOT_IN_RUN_ID and not (k in TRAIN_ADDED_LATER and v == TRAIN_ADDED_LATER[k])}


def scenario_identity(params: dict) -> dict:
    """The stream parameters that identify a run's results."""
    return {k: v for k, v in params.items()
            if k not in SCENARIO_NOT_IN_RUN_ID and not (k in SCENARIO_ADDED_LATER and v == SCENARIO_ADDED_LATER[k])}
