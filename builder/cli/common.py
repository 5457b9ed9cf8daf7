"""What both console scripts share: logging setup and the error boundary (exit codes, no tracebacks)."""
from __future__ import annotations

import logging
import sys
import traceback

import click

from builder.core import proc as runner
from builder.core.errors import BuilderError, Interrupted

log = logging.getLogger("imgbuild")


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        return msg


class _AboveBars(logging.StreamHandler):
    """On a terminal, a log line is written above the progress bar that is showing (tqdm clears the bar, writes
    the line, draws the bar again), so a line and a bar never overwrite each other."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging's own contract: a handler never raises
            self.handleError(record)


def setup_logging(verbose: int, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else runner.TRACE if verbose > 1 else logging.DEBUG if verbose else logging.INFO
    log.setLevel(level)
    if not log.handlers:
        h = _AboveBars(sys.stderr) if sys.stderr.isatty() else logging.StreamHandler(sys.stderr)
        h.setFormatter(_Format())
        log.addHandler(h)
    log.propagate = False


class Path(click.Path):
    """click.Path that refuses an empty value: `-o "$DIR"` with DIR unset is a mistake, not the current
    directory (pathlib reads '' as '.')."""

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        if isinstance(value, str) and not value:
            self.fail("an empty path (an unset variable?); give a path, or . for the current directory", param, ctx)
        return super().convert(value, param, ctx)


class _NonEmpty(click.ParamType):
    name = "text"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        if isinstance(value, str) and not value:
            self.fail("an empty value (an unset variable?)", param, ctx)
        return value


NONEMPTY = _NonEmpty()    # a string option ('' would silently mean a default: the host's inventory, the cwd ...)


def verbosity(f):
    """-v/-q/--debug, accepted before or after the subcommand."""
    f = click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")(f)
    f = click.option("-v", "--verbose", count=True, help="Show the commands run and their output; -vv also "
                     "what imgbuild summarises itself (rsync's line per file).")(f)
    f = click.option("--debug", is_flag=True, help="One -v more, and a traceback on errors.")(f)
    return f


def apply_verbosity(verbose: int, quiet: bool, debug: bool) -> None:
    ctx = click.get_current_context()
    root = ctx.find_root()
    root.obj = root.obj or {}
    root.obj["debug"] = root.obj.get("debug") or debug
    v = max(verbose, root.obj.get("verbose", 0)) + (1 if debug else 0)
    root.obj["verbose"] = v
    setup_logging(v, quiet and not v)


def _interrupted_by(what: str) -> None:
    """An interrupt arrived and something else failed on the way out (a child stopped for it, an unmount):
    the interrupt is what happened (exit 130); the other failure is said as a hint."""
    print("error: interrupted", file=sys.stderr)
    print(f"hint: while stopping: {what}", file=sys.stderr)
    sys.exit(130)


# click >= 8.2 raises this for a group run without a command; it carries the help text, not an error
_HELP_ONLY = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _usage_hint(ctx: click.Context | None, group: click.Group) -> str:
    """`imgbuild build [OPTIONS] RECIPE; see imgbuild build --help` for the command the usage error is about."""
    if ctx is None:
        return f"see {group.name or 'the command'} --help"
    usage = " ".join(ctx.command.collect_usage_pieces(ctx))
    return f"usage: {ctx.command_path} {usage}; see {ctx.command_path} --help"


def run_cli(group: click.Group) -> None:
    """Run a click group with the project's error contract: `error:`/`hint:` on stderr, exit 2 for bad input,
    1 for a failed job, 130 for Ctrl-C; a traceback only with --debug."""
    debug = "--debug" in sys.argv[1:]
    setup_logging(0)
    # Ctrl-C, SIGTERM (kill, systemd, CI timeouts) and SIGHUP stop the children and unwind, so mounts and
    # partial outputs are cleaned up; SIGINT also when the shell started us with it ignored (a background job).
    runner.install_signal_handlers()
    try:
        group.main(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except _HELP_ONLY as e:   # the bare command: its help, as click shows it
        print(e.format_message(), file=sys.stderr)
        sys.exit(2)
    except click.UsageError as e:
        # click's own wording ("Error: ...", "Usage: ...") in the project's: error:, hint:, exit 2
        print(f"error: {e.format_message()}", file=sys.stderr)
        print(f"hint: {_usage_hint(e.ctx, group)}", file=sys.stderr)
        sys.exit(2)
    except click.ClickException as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (click.Abort, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except BuilderError as e:
        if debug:
            traceback.print_exc()
        if runner.interrupted() and not isinstance(e, Interrupted):
            _interrupted_by(e.message)
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - the last line of defence
        if debug:
            traceback.print_exc()
        if runner.interrupted():
            _interrupted_by(f"{e.__class__.__name__}: {e}")
        print(f"error: internal error: {e.__class__.__name__}: {e}", file=sys.stderr)
        print("hint: this is a bug in imgbuild; run again with --debug and report the traceback",
              file=sys.stderr)
        sys.exit(70)
