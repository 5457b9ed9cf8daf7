"""The one exception tree. Library code raises these; only the CLI turns them into exit codes.

BuilderError            anything the user can act on (exit 1)
  InputError            bad input: recipe, option, path given by the user (exit 2)
    RecipeError         one or more recipe problems, each with file and key path
  CommandError          a subprocess failed (command, status, tail of its output)
    ToolMissing         a program is not installed (names the Debian package)
  MirrorError           the package mirror could not be read or is inconsistent
  UnsafePath            a path inside a root tree would escape it
  Interrupted           the user pressed Ctrl-C (exit 130)
"""
from __future__ import annotations

from dataclasses import dataclass


class BuilderError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(BuilderError):
    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One recipe problem: where (file, key path) and what."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {_short(self.path)}" if self.path else self.file
        return f"{where}: {_short(self.message)}"


SHOWN = 400     # characters of a message shown: a value of megabytes is shown by its ends


def _short(text: str) -> str:
    if len(text) <= SHOWN:
        return text
    half = SHOWN // 2
    return f"{text[:half]}...[{len(text) - SHOWN:,} characters left out]...{text[-half:]}"


class RecipeError(InputError):
    def __init__(self, problems: list[Problem], hint: str | None = None):
        self.problems = list(problems)
        n = len(self.problems)
        head = "\n".join(str(p) for p in self.problems)
        super().__init__(head if n == 1 else f"{n} problems:\n{head}", hint)


class CommandError(BuilderError):
    def __init__(self, command: str, status: int, tail: list[str], hint: str | None = None):
        self.command = command
        self.status = status
        self.tail = tail
        msg = f"command failed with exit status {status}: {command}"
        if tail:
            msg += "\n  last output:\n" + "\n".join("    " + line for line in tail)
        super().__init__(msg, hint)


class ToolMissing(CommandError):
    def __init__(self, program: str, package: str | None):
        hint = f"install it: apt-get install {package}" if package else "install it and retry"
        BuilderError.__init__(self, f"{program}: command not found", hint)
        self.command, self.status, self.tail = program, 127, []


class MirrorError(BuilderError):
    pass


class UnsafePath(BuilderError):
    pass


class Interrupted(BuilderError):
    exit_code = 130

    def __init__(self, message: str = "interrupted"):
        super().__init__(message, "nothing was left mounted; the previous output is untouched")
