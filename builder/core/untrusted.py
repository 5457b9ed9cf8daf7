"""Reading data imgbuild does not trust: YAML and JSON from recipes, guests, images, remote hosts and earlier runs.

Every YAML or JSON file imgbuild reads goes through here, so each one gets the same rules:
  - bytes must be UTF-8 text (a binary file is refused, naming it);
  - YAML: duplicate keys are refused (PyYAML silently keeps the last), aliases may not refer to themselves, and
    the document expanded through its aliases may hold at most MAX_NODES nodes (a "billion laughs" file of a few
    hundred bytes would otherwise expand to millions of nodes and hang the program);
  - JSON: nesting is bounded and the top-level value must have the expected type.
Problems raise RecipeError (an InputError: exit 2) naming the file, the line when known, and what to do.
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from builder.core.errors import Problem, RecipeError

MAX_NODES = 50_000    # nodes after alias expansion; the largest shipped recipe has a few hundred
MAX_DEPTH = 64        # nesting of mappings and lists
MAX_FILE = 8 << 20    # bytes of a recipe, manifest, nodes.json, inventory ... (the largest imgbuild writes are KBs)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, recursive aliases and documents that expand past MAX_NODES.

    Subclasses that construct mappings their own way (to remember lines, say) get the duplicate check as long
    as they build them with construct_mapping()."""

    def compose_document(self):  # noqa: ANN201 - PyYAML's own signature
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for k, _ in node.value:
                if k.tag == MERGE_TAG:      # `<<: *base` merges another mapping; its keys may be overridden
                    continue
                key = self.construct_object(k, deep=deep)
                try:
                    dup = key in seen
                except TypeError:    # a mapping or list used as a key
                    raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value, not a "
                                                            "mapping or list", k.start_mark) from None
                if dup:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# a terminal's colour and cursor sequences (CSI ... final byte): dropped from guest console text before the rest is
# escaped, so systemd's coloured [FAILED] reads as text and no sequence reaches the terminal
CSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def shown(text: str, limit: int = 300) -> str:
    """Text from a remote host or a guest, fit to print: control characters (a terminal's escape sequences, BEL,
    newlines) as \\xNN, at most `limit` characters."""
    out = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return out if len(out) <= limit else out[:limit] + "..."


def console_line(text: str, limit: int = 1000) -> str:
    """A line of a guest's console, fit to print: colour sequences dropped, every other control character
    (OSC title sequences, BEL, cursor movement...) escaped by shown()."""
    return shown(CSI.sub("", text), limit)


MERGE_TAG = "tag:yaml.org,2002:merge"


def _distinct(root: yaml.Node) -> int:
    """The nodes of the document as written (each alias's target counted once)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += node.value
        elif isinstance(node, yaml.MappingNode):
            stack += [x for kv in node.value for x in kv]
    return len(seen)


def _check_expansion(root: yaml.Node | None) -> None:
    """Size of the document with every alias expanded (memoised over the node graph, so linear in its size): at
    most MAX_NODES more values than the document holds as written (whose size the file's size bounds), so a long
    plain document (an inventory export of 100k guests) is read and a small one that aliases expand is not."""
    if root is None:
        return
    limit = MAX_NODES + _distinct(root)
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise yaml.composer.ComposerError(None, None, "an alias refers to the collection that contains it",
                                              node.start_mark)
        if depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                              node.start_mark)
        n = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            active.add(key)
            items = node.value if isinstance(node, yaml.SequenceNode) else [x for kv in node.value for x in kv]
            for child in items:
                n += size(child, depth + 1)
                if n > limit:
                    raise yaml.composer.ComposerError(
                        None, None, f"expands to more than {MAX_NODES} values through its aliases (&anchor/*alias)",
                        node.start_mark)
            active.discard(key)
        sizes[key] = n
        return n

    size(root, 0)


def _text(data: bytes | str, shown: str, what: str) -> str:
    if isinstance(data, str):
        return data
    if b"\0" in data:
        raise RecipeError([Problem(shown, "", f"is a binary file, not {what}")], f"give the path of {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError([Problem(shown, "", f"is not UTF-8 text (byte {e.start}): not {what}")],
                          "save the file as UTF-8") from None


YAML_HINT = ("YAML: indent with spaces, quote values containing ': ' or starting with special characters "
             "({, [, *, &, !, %, @)")


def load_yaml(data: bytes | str, shown: str, *, what: str = "a YAML file", loader: type = StrictLoader,
              hint: str = YAML_HINT, text_if_not_yaml: bool = False) -> Any:
    """Parse one YAML document strictly; problems raise RecipeError naming `shown` and the line.

    text_if_not_yaml: a value that is not YAML at all (a syntax error) is returned as the plain string, as
    `--set KEY=VALUE` takes it; what breaks the rules above (duplicate keys, aliases) is still refused."""
    text = _text(data, shown, what)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - loader is StrictLoader or a subclass (a SafeLoader)
    except (yaml.scanner.ScannerError, yaml.parser.ParserError) as e:
        if text_if_not_yaml:
            return text
        raise _problem(e, shown, "YAML syntax", hint) from None
    except yaml.YAMLError as e:
        raise _problem(e, shown, "YAML", hint) from None
    except RecursionError:
        raise RecipeError([Problem(shown, "", "YAML nested too deeply")], hint) from None


def _problem(e: yaml.YAMLError, shown: str, kind: str, hint: str) -> RecipeError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or str(e)
    return RecipeError([Problem(shown, where, f"{kind}: {problem}")], hint)


def load_json(data: bytes | str, shown: str, *, what: str = "a JSON file", expect: type | None = dict,
              hint: str | None = None) -> Any:
    """Parse JSON from a file imgbuild wrote earlier (manifest.json, nodes.json ...), which may have been changed."""
    text = _text(data, shown, what)
    try:
        value = json.loads(text)
    except RecursionError:
        raise RecipeError([Problem(shown, "", f"nested too deeply for {what}")], hint) from None
    except ValueError as e:
        where = f"line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        raise RecipeError([Problem(shown, where, f"not {what}: {msg}")], hint) from None
    if expect is not None and not isinstance(value, expect):
        kind = {dict: "an object ({...})", list: "a list ([...])"}.get(expect, expect.__name__)
        raise RecipeError([Problem(shown, "", f"{what} must be {kind}, found {type(value).__name__}")], hint)
    return value


def read_file(path: str | os.PathLike[str], shown: str | None = None, *, what: str = "the file",
              limit: int = MAX_FILE, hint: str | None = None) -> bytes:
    """The bytes of the regular file at path, read without blocking and at most `limit` of them: a directory,
    fifo, socket or device (/dev/zero, a fifo no one writes to) and a file larger than `limit` are refused, as
    is one that cannot be read; each a RecipeError (exit 2) naming it."""
    shown = shown or str(path)

    def bad(msg: str) -> RecipeError:
        return RecipeError([Problem(shown, "", msg)], hint or f"give the path of {what}")

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise bad(f"cannot read {what}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a fifo" if stat.S_ISFIFO(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
                    stat.S_ISBLK(st.st_mode) else "not a regular file")
            raise bad(f"is {kind}, not {what}")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise bad(f"larger than {limit:,} bytes: too large for {what}")
        return b"".join(chunks)
    except OSError as e:
        raise bad(f"cannot read {what}: {e.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], shown: str | None = None, *, what: str = "a text file",
              limit: int = MAX_FILE, hint: str | None = None) -> str:
    """read_file, and the bytes must be UTF-8 text (a binary file is refused): a RecipeError naming it."""
    shown = shown or str(path)
    data = read_file(path, shown, what=what, limit=limit, hint=hint)
    try:
        return _text(data, shown, what)
    except RecipeError as e:
        raise RecipeError(e.problems, hint or e.hint) from None


def read_json(path: Path, shown: str | None = None, **kw: Any) -> Any:
    """load_json of a file (read_file: a regular file of at most MAX_FILE bytes); an unreadable file is an
    InputError naming it."""
    shown = shown or str(path)
    data = read_file(path, shown, what=kw.get("what", "a JSON file"), hint=kw.get("hint"))
    return load_json(data, shown, **kw)
