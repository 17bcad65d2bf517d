"""Command-line parsing shared by ``clbench`` and ``clbench speed``: bad input is one line.

An argument error raises :class:`UsageError` (one line, no usage dump) instead of printing the
usage and exiting; ``clbench`` prints it as ``clbench: error: ...`` with status 2, like every
other bad input.
"""

from __future__ import annotations

import argparse

from benchmark.messages import closest


class UsageError(ValueError):
    """Bad command-line input."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one-line :class:`UsageError` s naming the
    subcommand (``run: the following arguments are required: config``), the allowed values
    and the closest one."""

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            words = message.split(":", 1)[1].split()
            option = next((w.split("=", 1)[0] for w in words if w.startswith("-")), None)
            if option is not None:
                message += closest(option, option_strings(self)) + f" (see `{self.prog} --help`)"
        if message == "the following arguments are required: command":
            commands = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
            message = f"a command is required: {', '.join(commands)} (see `{self.prog} --help`)"
        words = self.prog.split(" ", 1)
        raise UsageError(f"{words[1]}: {message}" if len(words) > 1 else message)

    def _check_value(self, action, value):  # name the allowed values and the closest one
        if action.choices is not None and value not in action.choices:
            allowed = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}; allowed: {allowed}"
                                                 f"{closest(str(value), action.choices)}")


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of ``parser`` and of its subcommands."""
    found = []
    for action in parser._actions:
        found += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += option_strings(sub)
    return sorted(set(found))
