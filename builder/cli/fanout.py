"""`--hosts a,b,@FILE -j N`: a remote command run for many hosts (builder.migrate.fleet), from the command line.

The command for one host is the same command line without the fan-out options and with the host as its HOST
argument: rebuilt from click's own view of what the user gave, so every option reaches every host as typed.
"""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click

from builder.core.outputs import write_atomic
from builder.migrate import fleet

FANOUT = ("hosts", "jobs", "fail_fast", "logs", "host", "result_json")
RESULT = "--result-json"


@dataclass(frozen=True)
class FanOut:
    """The fan-out options as one value: `hosts` (the LIST, or None for one HOST), `jobs`, `fail_fast`, `logs`,
    and `result` (a child's hidden --result-json: where it leaves what it did for the table)."""
    hosts: str | None
    jobs: int
    fail_fast: bool
    logs: Path
    result: Path | None

    def check(self, host: str | None) -> None:
        """Exactly one of HOST and --hosts (a usage error otherwise)."""
        if bool(host) == bool(self.hosts):
            raise click.UsageError("give one HOST, or --hosts LIST for many")

    def many(self, ctx: click.Context, host: str | None,
             per_host: dict[str, Callable[[str, fleet.Target], str]] | None = None) -> bool:
        """With --hosts, run every host and return True (the caller is done); False for one HOST. Call it after
        every local check, so bad input stops before any host is contacted."""
        self.check(host)
        if not self.hosts:
            return False
        run_fanout(ctx, self.hosts, self.jobs, self.fail_fast, self.logs, RESULT, per_host)
        return True

    def report(self, data: dict) -> None:
        """A child's result for the table (what it changed: `summary`, or push's paths; `bytes`)."""
        if self.result:
            write_atomic(self.result, json.dumps(data))


def fanout_options(f):
    @click.option("--logs", type=click.Path(file_okay=False, path_type=Path), default=Path("output/.logs"),
                  show_default=True, metavar="DIR", help="With --hosts: where each host's log is kept.")
    @click.option("--fail-fast", is_flag=True, help="With --hosts: stop the others when one host fails.")
    @click.option("-j", "--jobs", type=click.IntRange(1, 64), default=4, show_default=True,
                  help="With --hosts: hosts worked on at once.")
    @click.option("--hosts", metavar="LIST", help="Many hosts instead of HOST: names separated by commas, "
                  "@FILE for one per line, @INVENTORY[:GROUP] for an Ansible inventory (needs ansible-core). Each "
                  "runs as its own `migrate` process; a summary table at the end.")
    @click.option("--result-json", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
    @functools.wraps(f)
    def wrapper(*a, hosts, jobs, fail_fast, logs, result_json, **kw):
        return f(*a, fan=FanOut(hosts, jobs, fail_fast, logs, result_json), **kw)
    return wrapper


def argv_for_host(ctx: click.Context, host: fleet.Target, extra: list[str],
                  per_host: dict[str, Callable[[str, fleet.Target], str]] | None = None) -> list[str]:
    """This command line for one host: every option the user gave (not a default), the fan-out ones left out; the
    host's own port (from an inventory) after the user's, so it wins. `per_host` maps an option's name to how its
    value changes for one host (an output directory of its own)."""
    argv = [sys.executable, "-m", "builder.cli.migrate", ctx.info_name]
    for p in ctx.command.params:
        if not isinstance(p, click.Option) or p.name in FANOUT:
            continue
        if ctx.get_parameter_source(p.name) in (click.core.ParameterSource.DEFAULT, None):
            continue
        value = ctx.params.get(p.name)
        flag = next((o for o in p.opts if o.startswith("--")), p.opts[0])
        if p.count:
            argv += [flag] * int(value or 0)
        elif p.is_flag:
            if value:
                argv.append(flag)
        elif p.multiple:
            for v in value or ():
                argv += [flag, str(v)]
        elif value is not None:
            argv += [flag, per_host[p.name](str(value), host) if per_host and p.name in per_host else str(value)]
    port = ["--port", str(host.port)] if host.port else []
    return [*argv, *extra, *port, host.dest]


def run_fanout(ctx: click.Context, hosts_spec: str, jobs: int, fail_fast: bool, logs: Path,
               result_option: str, per_host: dict[str, Callable[[str, fleet.Target], str]] | None = None) -> None:
    """Every host of the set, the live view, the summary table; exit 1 naming the hosts that failed."""
    hosts = fleet.parse_hosts(hosts_spec)
    view = fleet.LiveView()
    done = fleet.run(hosts, lambda h, res: argv_for_host(ctx, h, [result_option, str(res)], per_host), jobs, logs,
                     fail_fast, view)
    report(done, logs)


def report(done: list[fleet.Job], logs: Path) -> None:
    """The summary table, each failure with its log, and exit 1 naming the hosts that failed."""
    for line in fleet.table(done):
        click.echo(line)
    click.echo(f"logs: {logs}/")
    bad = [j.host for j in done if j.status != "ok"]
    for j in done:
        if j.status != "ok":
            click.echo(f"{j.host}: {j.error} (log: {j.log})", err=True)
    if bad:
        click.echo(f"error: {len(bad)} of {len(done)} hosts failed: {', '.join(bad)}", err=True)
        sys.exit(1)
