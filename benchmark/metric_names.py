"""The names of the metrics and timings of a run record, defined once: the runner, the store
(``summary.csv``), the tidy table, the comparison tables and the report all take them from
here. A module of its own, without imports, so that ``clbench report`` reads them without
importing torch."""

# record["metrics"]: computed from the accuracy matrix (benchmark.metrics.all_metrics), in this order
METRICS = ("acc", "la", "bwt", "fwt", "forgetting")
# record["timing"]: seconds training and evaluating, the share of them spent evaluating, and the
# seconds of eval_s that continual evaluation took (benchmark.continual_eval)
TIMES = ("train_s", "eval_s", "eval_share", "curve_eval_s")
# record["timing"]: training iterations, a strategy's inner steps, meta-loss evaluations and the
# examples of those (strategies.StrategyReport; empty for strategies that do not report them), and
# the compute of the run (benchmark.compute): incoming training examples, examples backpropagated
# (gradient evaluations) and those per incoming example
COUNTS = ("iterations", "inner_steps", "meta_losses", "meta_examples", "incoming_examples", "gradient_examples",
          "grad_per_example")
# record["metrics"] of a run with continual evaluation (train.eval_every; benchmark.stream_metrics)
CURVE_METRICS = ("aaa", "min_acc", "wc_acc", "gap_depth", "gap_recovered", "online_acc")
TIMINGS = (*TIMES, *COUNTS)  # every timing entry, the timing columns of summary.csv
