"""The one error type of the scenarios package."""


class ScenarioError(ValueError):
    """Bad input to a stream or a data source.

    The message is one line that names what is wrong and what is allowed, so that a
    command-line front end can print it as it is, without a traceback.
    """
