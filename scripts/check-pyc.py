#!/usr/bin/env python3
"""check-pyc.py - finds stale .pyc files, as the import system itself would judge them.

Run inside an image with that image's Python (it reads itself from stdin fine):

    podman run --rm -i IMAGE python3 -B - < scripts/check-pyc.py [DIR...]

Every `__pycache__/*.pyc` of this interpreter's cache tag under DIR (default: the standard
library, every site-packages directory and Debian's dist-packages) is checked against its source
the way importlib's SourceLoader does (PEP 552):
  - magic number: must be this interpreter's (importlib.util.MAGIC_NUMBER);
  - flags 0 (timestamp): the source's mtime and size must equal the header's;
  - flags 1 or 3 (hash-based, unchecked or checked): the header's hash must equal
    importlib.util.source_hash(source bytes). (An unchecked pyc is never validated at import
    time, so a mismatch there would be silently wrong: it counts as stale too.)
A stale .pyc makes Python recompile the module on every import (it cannot write the result as
the sandbox user) or, unchecked, run old code. Prints one line per stale file and a summary;
exits 1 if any is stale or none was found, 0 otherwise.
"""
import importlib.util
import os
import site
import sys
import sysconfig


def roots(argv):
    if argv:
        return argv
    found = {sysconfig.get_paths()["stdlib"], *site.getsitepackages()}
    user = site.getusersitepackages()
    if isinstance(user, str):
        found.add(user)
    found.update(p for p in sys.path if p.endswith(("dist-packages", "site-packages")))
    return sorted(p for p in found if os.path.isdir(p))


def check(pyc, source):
    """None if `pyc` is valid for `source`, else why not."""
    with open(pyc, "rb") as f:
        head = f.read(16)
    if len(head) < 16:
        return "truncated header"
    if head[:4] != importlib.util.MAGIC_NUMBER:
        return "magic number of another Python"
    flags = int.from_bytes(head[4:8], "little")
    if flags == 0:
        st = os.stat(source)
        mtime = int.from_bytes(head[8:12], "little")
        size = int.from_bytes(head[12:16], "little")
        if mtime != int(st.st_mtime) & 0xFFFFFFFF:
            return f"timestamp pyc: source mtime {int(st.st_mtime)} != recorded {mtime}"
        if size != st.st_size & 0xFFFFFFFF:
            return f"timestamp pyc: source size {st.st_size} != recorded {size}"
        return None
    if flags in (1, 3):
        with open(source, "rb") as f:
            want = importlib.util.source_hash(f.read())
        if head[8:16] != want:
            return "hash-based pyc: source hash differs"
        return None
    return f"unknown flags {flags}"


def main(argv):
    tag = sys.implementation.cache_tag
    counts = {"timestamp": 0, "hash": 0, "orphan": 0}
    stale = []
    for root in roots(argv):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if os.path.basename(dirpath) != "__pycache__":
                continue
            for name in sorted(filenames):
                parts = name.split(".")
                # NAME.TAG.pyc or NAME.TAG.opt-N.pyc, for this interpreter only.
                if not name.endswith(".pyc") or len(parts) < 3 or parts[1] != tag:
                    continue
                pyc = os.path.join(dirpath, name)
                source = os.path.join(os.path.dirname(dirpath), parts[0] + ".py")
                if not os.path.exists(source):
                    # Without a source the import system ignores a __pycache__ entry.
                    counts["orphan"] += 1
                    continue
                why = check(pyc, source)
                with open(pyc, "rb") as f:
                    f.seek(4)
                    kind = "timestamp" if f.read(4) == b"\0\0\0\0" else "hash"
                counts[kind] += 1
                if why:
                    stale.append((pyc, why))
    for pyc, why in stale:
        print(f"stale: {pyc}: {why}")
    total = counts["timestamp"] + counts["hash"]
    print(
        f"checked {total} .pyc files ({counts['timestamp']} timestamp, {counts['hash']} hash-based;"
        f" {counts['orphan']} without a source ignored): {len(stale)} stale"
    )
    if total == 0:
        print("no .pyc files found: nothing was checked", file=sys.stderr)
        return 1
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
