"""The names of the metrics and timings of a run record, defined once: the runner, the store
(``summary.csv``), the tidy table, the comparison tables and the report all take them from
here. A module of its own, without imports, so that ``clbench report`` reads them without
importing torch."""

# record["metrics"]: computed from the accuracy matrix (benchmark.metrics.all_metrics), in this order
METRICS = ("acc", "la", "bwt", "fwt", "forgetting")
# record["timing"]: seconds training and evaluating, and the share of them spent evaluating
TIMES = ("train_s", "eval_s", "eval_share")
# record["timing"]: training iterations, a strategy's inner steps, meta-loss evaluations and the
# examples of those (strategies.StrategyReport; empty for strategies that do not report them)
COUNTS = ("iterations", "inner_steps", "meta_losses", "meta_examples")
TIMINGS = (*TIMES, *COUNTS)  # every timing entry, the timing columns of summary.csv
