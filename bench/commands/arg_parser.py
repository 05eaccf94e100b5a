"""The command line's parser: no abbreviated flags, and errors that fit in a few lines.

argparse prints a sub-command's unknown flag under the top-level usage and wraps a long usage
over ten lines; a user needs the command's name, the one thing wrong, and what was meant.
"""

from __future__ import annotations

import argparse
import difflib
import textwrap
from typing import Any, NoReturn


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps help at spaces only: encoding names such as columnar-orjson stay whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class ArgParser(argparse.ArgumentParser):
    """argparse, with no abbreviations (``--batch-size`` must not quietly mean ``--batch-sizes``) and
    short errors: the command's usage in one line, the error in one line, and a hint where one helps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def short_usage(self) -> str:
        usage = self.format_usage().strip()
        if "\n" not in usage:
            return usage
        positionals = [
            a.metavar or a.dest for a in self._actions if not a.option_strings and a.help != argparse.SUPPRESS
        ]
        return (
            " ".join(["usage:", self.prog, "[options]", *map(str, positionals)]) + f"  ({self.prog} --help lists them)"
        )

    def error(self, message: str) -> NoReturn:
        hint = self.hint(message)
        self.exit(2, f"{self.short_usage()}\n{self.prog}: error: {message}\n" + (f"hint: {hint}\n" if hint else ""))

    def hint(self, message: str) -> str | None:
        """For an unrecognized flag: the flag meant (dash/underscore swapped, or the closest spelling)."""
        if not message.startswith("unrecognized arguments:"):
            return None
        known = [o for o in self._option_string_actions if o.startswith("--")]
        for word in message.split(":", 1)[1].split():
            flag = word.split("=", 1)[0]
            if not flag.startswith("--"):
                continue
            swapped = "--" + (flag[2:].replace("-", "_") if "-" in flag[2:] else flag[2:].replace("_", "-"))
            if swapped in known and "_" in swapped:
                return f"{self.prog.split()[-1]} takes tensorflow_model_server's flags: {swapped}"
            if swapped in known:
                return f"did you mean {swapped}?"
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
            if close:
                return f"did you mean {close[0]}?"
        return None


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of sub-command ``command`` (``parser`` itself when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen: argparse.ArgumentParser = action.choices[command]
            return chosen
    return parser
