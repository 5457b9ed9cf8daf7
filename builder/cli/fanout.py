"""`--hosts a,b,@FILE -j N`: a remote command run for many hosts (builder.migrate.fleet), from the command line.

The command for one host is the same command line without the fan-out options and with the host as its HOST
argument: rebuilt from click's own view of what the user gave, so every option reaches every host as typed.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from builder.migrate import fleet

FANOUT = ("hosts", "jobs", "fail_fast", "logs", "host")


def fanout_options(f):
    @click.option("--logs", type=click.Path(file_okay=False, path_type=Path), default=Path("output/.logs"),
                  show_default=True, metavar="DIR", help="With --hosts: where each host's log is kept.")
    @click.option("--fail-fast", is_flag=True, help="With --hosts: stop the others when one host fails.")
    @click.option("-j", "--jobs", type=click.IntRange(1, 64), default=4, show_default=True,
                  help="With --hosts: hosts worked on at once.")
    @click.option("--hosts", metavar="LIST", help="Many hosts instead of HOST: names separated by commas, "
                  "@FILE for one per line, @INVENTORY[:GROUP] for an Ansible inventory (needs ansible-core). Each "
                  "runs as its own `migrate` process; a summary table at the end.")
    @functools.wraps(f)
    def wrapper(*a, **kw):
        return f(*a, **kw)
    return wrapper


def argv_for_host(ctx: click.Context, host: fleet.Target, extra: list[str]) -> list[str]:
    """This command line for one host: every option the user gave (not a default), the fan-out ones left out; the
    host's own port (from an inventory) after the user's, so it wins."""
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
            argv += [flag, str(value)]
    port = ["--port", str(host.port)] if host.port else []
    return [*argv, *extra, *port, host.dest]


def run_fanout(ctx: click.Context, hosts_spec: str, jobs: int, fail_fast: bool, logs: Path,
               result_option: str) -> None:
    """Every host of the set, the live view, the summary table; exit 1 naming the hosts that failed."""
    hosts = fleet.parse_hosts(hosts_spec)
    view = fleet.LiveView()
    done = fleet.run(hosts, lambda h, res: argv_for_host(ctx, h, [result_option, str(res)]), jobs, logs,
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
