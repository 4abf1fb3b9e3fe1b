#!/usr/bin/env python3
"""Generate the expected AST dumps of the real-world Dockerfile corpus with an independent oracle.

The oracle is the PyPI package `dockerfile` (https://pypi.org/project/dockerfile/), which wraps
BuildKit's own Go parser (`frontend/dockerfile/parser`). It does not expose `Node.Dump()`, so
this script rebuilds BuildKit's s-expression dump from the commands it returns:

    (keyword ["--flag" ...] "arg" ...)            one line per instruction
    (onbuild ["--flag"] (sub "arg" ...))           ONBUILD triggers

Arguments are quoted like Go's strconv.Quote (Python's str.isprintable() has the same definition
of "printable" as Go's unicode.IsPrint). What the binding cannot express is reconstructed:

- ENV and LABEL: BuildKit's dump has `key value sep` triplets; the binding returns only
  key/value pairs. The separator is "" for the legacy form (`ENV key value`, the key followed by
  whitespace in the source) and "=" otherwise.
- ONBUILD triggers: the binding returns the trigger keyword and arguments but not the trigger's
  own flags; no file in the corpus has a flag inside an ONBUILD trigger.
- Strings are cut at NUL by the binding; no file in the corpus contains NUL.

Besides `<name>.dump`, the script writes `<name>.oracle.json` with each instruction's start and
end line and its heredocs (name, file descriptor, content), which the dump does not show.

Usage: python3 scripts/gen-dockerfile-dumps.py   (from the repository root; pip install dockerfile==3.4.0)
"""
import importlib.metadata
import json
import os
import re
import sys

import dockerfile

SRC = "fixtures/dockerfile/real-world"
OUT = "fixtures/dockerfile/real-world-expected"


def go_quote(s):
    out = ['"']
    for c in s:
        o = ord(c)
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[c])
        elif c.isprintable():
            out.append(c)
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:
            out.append("\\U%08x" % o)
    out.append('"')
    return "".join(out)


def flags(fs):
    return " [" + " ".join(go_quote(f) for f in fs) + "]" if fs else ""


def args_after_keyword_and_flags(original, n_flags):
    # Skip the keyword and the flag words to find where the arguments start in `original`.
    rest = re.sub(r"^\s*\S+[\t\v\f\r ]*", "", original, count=1)
    for _ in range(n_flags):
        rest = re.sub(r"^\S+\s*", "", rest, count=1)
    return rest


def value_nodes(cmd, original, n_flags, value):
    if cmd.lower() in ("env", "label"):
        if len(value) % 2:
            raise SystemExit("odd ENV/LABEL value list: %r" % (value,))
        rest = args_after_keyword_and_flags(original, n_flags)
        key = value[0] if value else ""
        legacy = len(value) == 2 and rest.startswith(key) and not rest[len(key):].startswith("=")
        out = []
        for i in range(0, len(value), 2):
            out += [value[i], value[i + 1], "" if legacy else "="]
        return out
    return list(value)


def dump(c):
    if c.cmd.lower() == "onbuild":
        if c.sub_cmd is None:
            return "onbuild" + flags(c.flags)
        inner = c.sub_cmd.lower() + "".join(" " + go_quote(v) for v in c.value)
        return "onbuild" + flags(c.flags) + " (" + inner + ")"
    vals = value_nodes(c.cmd, c.original, len(c.flags), c.value)
    return c.cmd.lower() + flags(c.flags) + "".join(" " + go_quote(v) for v in vals)


def main():
    version = importlib.metadata.version("dockerfile")
    os.makedirs(OUT, exist_ok=True)
    names = sorted(n for n in os.listdir(SRC) if n != "SOURCES.md")
    for name in names:
        cmds = dockerfile.parse_file(os.path.join(SRC, name))
        with open(os.path.join(OUT, name + ".dump"), "w", encoding="utf-8", newline="\n") as f:
            for c in cmds:
                f.write("(" + dump(c) + ")\n")
        meta = {
            "oracle": "dockerfile %s (PyPI)" % version,
            "instructions": [
                {
                    "start_line": c.start_line,
                    "end_line": c.end_line,
                    "heredocs": [
                        {"name": h.name, "fd": h.file_descriptor, "content": h.content} for h in c.heredocs
                    ],
                }
                for c in cmds
            ],
        }
        with open(os.path.join(OUT, name + ".oracle.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
            f.write("\n")
    with open(os.path.join(OUT, "ORACLE_VERSION"), "w") as f:
        f.write("dockerfile==%s\n" % version)
    print("wrote %d dumps with dockerfile %s" % (len(names), version), file=sys.stderr)


if __name__ == "__main__":
    main()
