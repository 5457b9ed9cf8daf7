"""A click group whose commands are imported only when one runs, so `migrate push` does not load the build
pipeline and `imgbuild schema` does not load the identity engine. `--help` lists the commands without importing
them: each one's short help comes from its docstring, read from the module's source."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import click


def load(ref: str, name: str) -> click.Command:
    """The command `name` that `ref` ("module:function") names, its module imported now."""
    module, _, attr = ref.partition(":")
    command = getattr(importlib.import_module(module), attr)
    if not isinstance(command, click.Command) or command.name != name:
        raise RuntimeError(f"{ref} is not the command {name!r}")
    return command


class LazyGroup(click.Group):
    """`lazy` maps a command's name to "module:function"; the module is imported on first use."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(load(self.lazy[cmd_name], cmd_name))
        return super().get_command(ctx, cmd_name)

    def help_line(self, cmd_name: str, limit: int) -> str:
        """A command's short help as click makes it from its docstring, without importing its module."""
        if cmd_name in self.commands:
            return self.commands[cmd_name].get_short_help_str(limit)
        module, _, attr = self.lazy[cmd_name].partition(":")
        spec = importlib.util.find_spec(module)
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == attr)
        # a stand-in with the same docstring: click shortens it exactly as it will the real command's
        return click.Command(cmd_name, help=ast.get_docstring(node)).get_short_help_str(limit)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [n for n in self.list_commands(ctx) if not (n in self.commands and self.commands[n].hidden)]
        if names:
            limit = formatter.width - 6 - max(len(n) for n in names)
            with formatter.section("Commands"):
                formatter.write_dl([(n, self.help_line(n, limit)) for n in names])
