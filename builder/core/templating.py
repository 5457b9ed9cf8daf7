"""Rendering a Jinja2 template that may come from anywhere: a recipe, or a guest or image that may be hostile.

A template is data, never code: the guest that carries it may be hostile, and it is rendered by root. Every
template is rendered the same way:
  - in Jinja2's immutable sandbox (no Python internals, no attribute starting with `_`, no str.format tricks,
    no changing lists or dicts; range() at most MAX_RANGE long), without include/import/extends;
  - in a child process of its own that can do nothing else: limits on memory (MEMORY), CPU time (CPU_SECONDS)
    and file size (0: it writes no file), no file descriptors but its pipe, and, when run as root, as nobody;
  - with bounded work: at most MAX_STEPS loop iterations and calls, operators that would build a string, list
    or number larger than MAX_OUTPUT refused before they do, and at most MAX_OUTPUT bytes of output.
Anything else is an InputError naming the template and, when known, the line.
"""

from __future__ import annotations

import gc
import json
import os
import pprint  # noqa: F401 - the same, for the `pprint` filter
import re
import resource
import signal
import textwrap  # noqa: F401 - the same, for the `wordwrap` filter
import traceback
from typing import Any, Iterator, Mapping

import jinja2
import jinja2.debug  # noqa: F401 - used when a render fails; imported here, before the child may open no file
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from builder.core.errors import BuilderError, InputError

MAX_OUTPUT = 1 << 20          # characters a template may render, and the longest string or list it may build
MAX_STEPS = 1_000_000         # loop iterations and calls in one render
MAX_INT_BITS = 1 << 16        # the largest number an operator may make (about 20,000 digits)
CPU_SECONDS = 30              # CPU time of the rendering child
MEMORY = 512 << 20            # memory the rendering child may allocate beyond what it starts with


def context(hostname: str, domain: str | None, addresses: Mapping[str, str], macs: Mapping[str, str],
            variables: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees. `ip` is the first interface's address (without prefix)."""
    first = next(iter(addresses.values()), None)
    return {**variables, "hostname": hostname, "domain": domain or "",
            "fqdn": f"{hostname}.{domain}" if domain else hostname, "ip": first,
            "addresses": dict(addresses), "macs": dict(macs)}


class TemplateLimit(SecurityError):
    """A template asked for more work, memory or output than a template may have."""


_STEPS_FILTER = "imgbuild_steps"
_steps = 0


def _tick(n: int = 1) -> None:
    global _steps
    _steps += n
    if _steps > MAX_STEPS:
        raise TemplateLimit(f"needs more than {MAX_STEPS:,} loop iterations and calls")


@jinja2.pass_context   # never evaluated while compiling (a constant list would be counted only once)
def _counted(_ctx: Any, iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _tick()
        yield item


def _size(v: Any) -> int | None:
    return len(v) if isinstance(v, (str, bytes, list, tuple)) else None


def _too_big(what: str) -> TemplateLimit:
    if what == "a number":
        return TemplateLimit(f"would make a number of more than {MAX_INT_BITS:,} bits")
    return TemplateLimit(f"would build {what} longer than {MAX_OUTPUT:,}")


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with bounded work (see the module's doc)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) is not None and isinstance(n, int) and _size(seq) * max(n, 0) > MAX_OUTPUT:
                    raise _too_big("a string or list")
            if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _too_big("a number")
        elif operator == "**":
            if ints and right > 0 and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
                raise _too_big("a number")
        elif operator == "+":
            if _size(left) is not None and _size(right) is not None and _size(left) + _size(right) > MAX_OUTPUT:
                raise _too_big("a string or list")
        elif operator == "%" and isinstance(left, str):
            for m in _PERCENT.finditer(left):
                if any(g == "*" or (g and len(g) > 7) or (g and int(g) > MAX_OUTPUT) for g in m.groups()):
                    raise _too_big("a formatted string")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's way
        _tick()
        if isinstance(__obj, LoopContext) and args:     # a recursive loop: its items count too
            args = (_counted(None, args[0]), *args[1:])
        return super().call(__context, __obj, *args, **kwargs)


_DROPPED_GLOBALS = ("lipsum",)    # makes text of any size
_FORBIDDEN = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def environment() -> jinja2.Environment:
    """The Jinja2 environment of every template imgbuild renders (recipes' and guests' alike)."""
    env = _Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    for name in _DROPPED_GLOBALS:
        env.globals.pop(name, None)
    env.filters[_STEPS_FILTER] = _counted
    return env


def _parse(env: jinja2.Environment, source: str) -> nodes.Template:
    ast = env.parse(source)
    for n in ast.find_all(_FORBIDDEN):
        word = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from ... import",
                nodes.Extends: "extends"}[type(n)]
        raise jinja2.TemplateSyntaxError(f"templates cannot use {{% {word} %}}: each one stands alone",
                                         n.lineno)
    return ast


class _Failure(Exception):
    def __init__(self, message: str, line: int | None, undefined: bool = False):
        super().__init__(message)
        self.message, self.line, self.undefined = message, line, undefined


def _line(e: BaseException) -> int | None:
    if getattr(e, "lineno", None):
        return e.lineno
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "<template>"]
    return frames[-1].lineno if frames else None


def _compile(source: str) -> jinja2.Template:
    """The template, compiled with every loop counted (raises TemplateError)."""
    env = environment()
    ast = _parse(env, source)
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, _STEPS_FILTER, [], [], None, None, lineno=loop.lineno,
                                 environment=env)
    code = env.compile(ast, filename="<template>")
    return env.template_class.from_code(env, code, env.make_globals(None))


def _render_here(source: str, ctx: Mapping[str, Any], confine: Any = None) -> bytes:
    """Compile and render in this process (the child): the text as UTF-8, or _Failure. `confine` is called
    between the two (compiling may still need to read Python's own modules; rendering needs no file)."""
    global _steps
    _steps = 0
    try:
        t = _compile(source)
        if confine is not None:
            confine()
        pieces, total = [], 0
        for piece in t.generate(**ctx):
            total += len(piece)
            if total > MAX_OUTPUT:
                raise TemplateLimit(f"renders more than {MAX_OUTPUT:,} characters")
            pieces.append(piece)
        text = "".join(pieces)
    except jinja2.UndefinedError as e:
        raise _Failure(str(e), _line(e), undefined=True) from None
    except jinja2.TemplateSyntaxError as e:
        raise _Failure(f"Jinja2 syntax: {e.message}", e.lineno) from None
    except jinja2.TemplateError as e:
        raise _Failure(str(e), _line(e)) from None
    except MemoryError as e:
        raise _Failure(f"needs more than {MEMORY >> 20} MiB of memory", _line(e)) from None
    except RecursionError as e:
        raise _Failure("nests too deeply (recursive macros or loops)", _line(e)) from None
    except Exception as e:  # noqa: BLE001 - whatever a template does wrong is its own error: 1/0, 'a' - 1 ...
        raise _Failure(f"{e.__class__.__name__}: {e}", _line(e)) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Failure("renders text that is not valid Unicode (a lone surrogate)", None) from None


# ------------------------------------------------------------------ the rendering child


_PIPE_FD = 3


def _limit(limit: int, value: int) -> None:
    _, hard = resource.getrlimit(limit)
    resource.setrlimit(limit, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))


def _confine_process(w: int) -> None:
    """The child, first: nothing but its pipe (as fd 3), bounded memory and CPU, no file written."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if w != _PIPE_FD:
        os.dup2(w, _PIPE_FD)
    os.closerange(_PIPE_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    memory = _address_space() + MEMORY
    for limit, value in ((resource.RLIMIT_CPU, CPU_SECONDS), (resource.RLIMIT_FSIZE, 0),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, memory)):
        _limit(limit, value)


def _confine_render() -> None:
    """The child, once the template is compiled: no file can be opened any more; as root, it becomes nobody."""
    _limit(resource.RLIMIT_NOFILE, _PIPE_FD + 1)
    if os.geteuid() == 0:
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
        except OSError:   # e.g. a user namespace without nobody: the sandbox and the limits still hold
            pass


def _address_space() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 30


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _child(w: int, source: str, ctx: Mapping[str, Any]) -> None:
    # no garbage collection in the child: a file object the parent left to the collector would be finalized
    # here and close its fd number, which may by now be the pipe's (fd 3): the output lost, exit status 1
    gc.disable()
    status = 0
    try:
        _confine_process(w)
        try:
            out = b"0" + _render_here(source, ctx, _confine_render)
        except _Failure as f:
            out = b"1" + json.dumps({"message": f.message[:2000], "line": f.line,
                                     "undefined": f.undefined}).encode()
        _write_all(_PIPE_FD, out)
    except BaseException:  # noqa: BLE001 - the child never returns into the parent's code
        status = 1
    finally:
        os._exit(status)


def _collect(pid: int, r: int) -> tuple[bytes, int]:
    """Everything the child writes (at most MAX_OUTPUT*4 + 64 KiB), then its wait status."""
    limit = MAX_OUTPUT * 4 + (64 << 10)
    chunks, total = [], 0
    while True:
        data = os.read(r, 1 << 16)
        if not data:
            break
        chunks.append(data)
        total += len(data)
        if total > limit:
            os.kill(pid, signal.SIGKILL)
            break
    _, status = os.waitpid(pid, 0)
    return b"".join(chunks), status


def render(source: str, ctx: Mapping[str, Any], name: str, hint: str | None = None) -> str:
    """The template rendered with `ctx`, in the sandbox, in a confined child process (see the module's doc).

    Problems raise InputError naming `name` (and the line); `hint` replaces the default hint for problems that
    are not an undefined variable."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        raise BuilderError(f"template {name}: cannot start the process that renders it: {e.strerror}") from None
    if pid == 0:
        os.close(r)
        _child(w, source, ctx)
    os.close(w)
    reaped = False
    try:
        out, status = _collect(pid, r)
        reaped = True
    finally:
        os.close(r)
        if not reaped:     # interrupted: the child goes too
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return _outcome(out, status, name, hint)


UNDEFINED_HINT = "define the variable in the recipe's vars (or --set VAR=VALUE when cloning)"
DEFAULT_HINT = ("templates may use variables, filters, tests, loops and macros; not Python internals, "
                "include/import, or work and output without bound")


def _outcome(out: bytes, status: int, name: str, hint: str | None) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        why = (f"used more than {CPU_SECONDS} s of CPU time" if sig == signal.SIGXCPU
               else f"rendered more than {MAX_OUTPUT:,} characters" if len(out) > MAX_OUTPUT
               else f"was killed by signal {signal.Signals(sig).name}")
        raise InputError(f"template {name}: stopped: it {why}", hint or DEFAULT_HINT)
    if out[:1] == b"0" and os.WEXITSTATUS(status) == 0:
        try:
            return out[1:].decode("utf-8")
        except UnicodeDecodeError:   # cannot happen: the child encoded it
            raise BuilderError(f"template {name}: the rendering process sent text that is not UTF-8") from None
    if out[:1] == b"1":
        try:
            f = json.loads(out[1:])
            message, line, undef = str(f["message"]), f.get("line"), bool(f.get("undefined"))
        except (ValueError, KeyError, TypeError):
            message, line, undef = "the rendering process failed", None, False
        where = f" line {line}" if isinstance(line, int) else ""
        raise InputError(f"template {name}{where}: {message}",
                         UNDEFINED_HINT if undef else hint or DEFAULT_HINT)
    raise BuilderError(f"template {name}: the rendering process failed (exit status {os.WEXITSTATUS(status)})",
                       "run again with --debug; if it persists, report it")


BUILTINS = frozenset({"hostname", "fqdn", "domain", "ip", "addresses", "macs"})


def undefined(source: str, variables: Mapping[str, Any]) -> set[str]:
    """Variables a template uses that neither imgbuild nor `vars` defines (checked when the recipe loads)."""
    try:
        ast = _parse(environment(), source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"Jinja2 syntax, line {e.lineno}: {e.message}") from None
    except RecursionError:
        raise ValueError("Jinja2: nested too deeply") from None
    used = meta.find_undeclared_variables(ast)
    # a variable only ever read through `| default(...)` is optional: the role templates document such knobs
    every = [n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"]
    guarded = [f.node.name for f in ast.find_all(nodes.Filter)
               if f.name in ("default", "d") and isinstance(f.node, nodes.Name)]
    optional = {name for name in set(guarded) if every.count(name) == guarded.count(name)}
    return set(used) - BUILTINS - set(variables) - optional
