"""The one error type of the strategies package."""


class StrategyError(ValueError):
    """Bad input to a strategy or the registry (unknown name, bad hyperparameter, broken
    plugin). The message is one line naming what is wrong and what is allowed."""
