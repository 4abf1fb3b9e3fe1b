"""report.py - the second round's sections in the results (issue #21), for scripts/plot_bench.py:
family (per-step overhead, kiln's own peak RSS), transfer (fan-in bytes), front (size/time table,
the two fronts, the dominance check, the plot), concurrency (store fsck). The ratios of these
sections' kiln/peer pairs are plot_bench.py's PAIRS; this module reads the section files
(family.tsv, transfer.tsv, concurrency.tsv under OUT) and the runs/sizes plot_bench.py loaded.

    extra(out, runs, rows, results) -> (svgs, markdown lines)   appends to results["targets"]
Standard library only.
"""
import math
import os
import re
import statistics as st
from html import escape

KILN, PEER, GRID = "#d9480f", "#1c7ed6", "#dee2e6"
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
VARIANTS = ("minimal", "python", "node", "full")


def _tsv(path):
    if not os.path.exists(path):
        return []
    return [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]


def _med(xs):
    return st.median(xs) if xs else None


def _f(v, d=2):
    return "–" if v is None else f"{v:.{d}f}"


# ---------------------------------------------------------------- family


def family(out, runs, rows, T):
    rs = _tsv(f"{out}/family.tsv")
    if not rs:
        return []
    steps = {}  # (variant, tool) -> {round: [(gap, cmd)], ...}
    tails = {}
    rss = []
    for r in rs:
        if r[0] == "step":
            steps.setdefault((r[1], r[2]), {}).setdefault(int(r[3]), []).append((float(r[5]), float(r[6])))
        elif r[0] == "tail":
            tails.setdefault((r[1], r[2]), {})[int(r[3])] = float(r[5])
        elif r[0] == "rss":
            rss.append((r[1], int(r[3]), int(r[4])))
    L = ["## Builds without the network's noise (family)", "",
         "The four `variants/Dockerfile*`, cold (`--no-cache`), rootless, kiln (overlay) against `buildah bud` (vfs, runc),",
         "both with RUN steps on the host network and every package from a cache on 127.0.0.1 filled before the first",
         "measured round (`scripts/bench/pkgcache.py`: Debian's archive in apt-cacher-ng's URL form, and a PEP 503 index",
         "of the variants' wheels). The base (debootstrap minbase) is the same tarball in both stores; its `BASH_ENV`",
         "makes every RUN's bash print its command's own start and end, so a build's **overhead** is its wall time",
         "minus the time inside the RUN commands.", "",
         "| variant | kiln s | buildah s | ratio | kiln: commands s / overhead s | buildah: commands s / overhead s |",
         "|---|---:|---:|---:|---:|---:|"]
    for v in VARIANTS:
        k, b = rows.get(f"kiln family {v}"), rows.get(f"buildah family {v}")
        if not k or not b:
            continue

        def split(tool, wall_runs):
            cmd, over = [], []
            for rnd, ss in steps.get((v, tool), {}).items():
                w = next((x["wall"] for x in wall_runs if x["round"] == rnd), None)
                if w is None:
                    continue
                c = sum(x[1] for x in ss)
                cmd.append(c)
                over.append(w - c)
            return _med(cmd), _med(over)
        kc, ko = split("kiln", runs.get(f"kiln family {v}", []))
        bc, bo = split("buildah", runs.get(f"buildah family {v}", []))
        ratio = _med([x["wall"] / y["wall"] for x in runs[f"kiln family {v}"] for y in runs[f"buildah family {v}"]
                      if x["round"] == y["round"]])
        L.append(f"| {v} | {_f(k['median_s'])} | {_f(b['median_s'])} | {_f(ratio, 3)}× | {_f(kc)} / {_f(ko)} | {_f(bc)} / {_f(bo)} |")
    L += ["", "Per RUN step (median over rounds): the time before the command starts (since the previous RUN's command",
          "ended, or since the build started: the previous step's snapshot and commit, COPY/ENV steps, this step's",
          "set-up) and the command's own time; the last line is the time after the last command (its commit, the",
          "image's config and manifest, exit).", ""]
    for v in VARIANTS:
        ks, bs = steps.get((v, "kiln"), {}), steps.get((v, "buildah"), {})
        if not ks and not bs:
            continue
        n = max([len(x) for x in list(ks.values()) + list(bs.values())] or [0])
        L += [f"| {v}: RUN step | kiln before s | kiln command s | buildah before s | buildah command s |", "|---:|---:|---:|---:|---:|"]
        for i in range(n):
            def col(d, j):
                return _f(_med([ss[i][j] for ss in d.values() if len(ss) > i]))
            L.append(f"| {i + 1} | {col(ks, 0)} | {col(ks, 1)} | {col(bs, 0)} | {col(bs, 1)} |")
        kt, bt = tails.get((v, "kiln"), {}), tails.get((v, "buildah"), {})
        L.append(f"| after the last | {_f(_med(list(kt.values())))} | | {_f(_med(list(bt.values())))} | |")
        L.append("")
    if rss:
        peak = max(x[2] for x in rss) / 1024
        by = ", ".join(f"{v} {max(x[2] for x in rss if x[0] == v) / 1024:.0f}" for v in VARIANTS if any(x[0] == v for x in rss))
        T.append(dict(target="family: kiln's own peak RSS ≤ 128 MiB (sampled VmHWM of the kiln processes)",
                      value=f"{peak:.1f} MiB ({by})", met=peak <= 128, margin=f"{peak / 128:.2f}× the target"))
        L += [f"kiln's own peak RSS (the largest VmHWM of the kiln processes, sampled every 0.2 s; GNU time's peak in the",
              f"tables is the largest process of the tree, apt or pip): {by} MiB.", ""]
    return L


# ---------------------------------------------------------------- transfer, concurrency


def transfer(out, T):
    rs = [r for r in _tsv(f"{out}/transfer.tsv") if r[0] == "fanin"]
    if not rs:
        return []
    L = ["## Fan-in: pulling a 5-layer image when 4 of its layers are present", "",
         "| tool | round | blob bytes the registry served | the missing layer's bytes | excess |", "|---|---:|---:|---:|---:|"]
    for tool in ("kiln", "skopeo"):
        for r in rs:
            if r[1] == tool:
                L.append(f"| {tool} | {r[2]} | {int(r[3]):,} | {int(r[4]):,} | {int(r[3]) - int(r[4]):+,} |")
    L += ["", "Served bytes count every `GET /v2/…/blobs/…` answered 200 in the registry's access log during the pull:",
          "the missing layer and the image config (a blob too, a few hundred bytes).", ""]
    k = [int(r[3]) - int(r[4]) for r in rs if r[1] == "kiln"]
    if k:
        worst = max(k)
        T.append(dict(target="transfer: a pull with 4 of 5 layers present fetches only the missing one (+ the config blob, < 64 KiB)",
                      value=f"excess over the missing layer: {worst:+,} bytes (worst round)",
                      met=0 <= worst < 65536, margin=f"{worst:+,} B"))
    return L


def concurrency(out, T):
    rs = _tsv(f"{out}/concurrency.tsv")
    if not rs:
        return []
    bad = [r for r in rs if r[3] != "0"]
    T.append(dict(target="concurrency: store consistent after every round (`kiln store fsck` exit 0)",
                  value=f"{len(rs) - len(bad)} of {len(rs)} checks passed", met=not bad, margin="" if not bad else f"{len(bad)} failed"))
    return []


# ---------------------------------------------------------------- front

def _front_points(rows):
    """(label, tool, seconds, bytes, runs) of every front case with a size."""
    pts = []
    for name, r in rows.items():
        if r["section"] != "front" or not r["size_bytes"]:
            continue
        if name.startswith("front kiln "):
            lab, tool = "kiln " + name[len("front kiln "):], "kiln"
        else:
            m = re.match(r"front tar\|(\S+) (-\d+)", name)
            lab = f"{m.group(1)} {m.group(2)}" if m else name[len("front "):]
            tool = "peer"
        fmt = "zstd" if "zstd" in lab else "gzip"  # umoci, buildah, gzip and pigz all write gzip
        pts.append(dict(label=lab, tool=tool, s=r["median_s"], b=r["size_bytes"], n=r["n"], cpu=r["cpu_s"], fmt=fmt))
    return pts


def _beaten(p, kiln):
    """How some kiln setting beats peer point p (smaller and faster), or how close the closest comes."""
    dom = [k for k in kiln if k["s"] <= p["s"] and k["b"] <= p["b"]]
    if dom:
        k = min(dom, key=lambda k: k["s"])
        return True, k, f"{k['label']} ({k['s'] / p['s']:.2f}× time, {(k['b'] / p['b'] - 1) * 100:+.1f}% size)"
    k = min(kiln, key=lambda k: max(k["s"] / p["s"], k["b"] / p["b"]))
    return False, k, f"**none**; closest {k['label']}: {k['s'] / p['s']:.2f}× time, {(k['b'] / p['b'] - 1) * 100:+.2f}% size"


def pareto(pts):
    """The points no other point beats on both time and size, by time."""
    best, out = math.inf, []
    for p in sorted(pts, key=lambda p: (p["s"], p["b"])):
        if p["b"] < best:
            out.append(p)
            best = p["b"]
    return out


def front_svg(pts):
    w, h, left, right, top, bottom = 960, 620, 80, 30, 50, 60
    xs = [p["s"] for p in pts]
    ys = [p["b"] / 1e6 for p in pts]
    x0, x1 = math.log10(min(xs) * 0.8), math.log10(max(xs) * 1.25)
    y0, y1 = min(ys) * 0.97, max(ys) * 1.03

    def X(v):
        return left + (w - left - right) * (math.log10(v) - x0) / (x1 - x0)

    def Y(v):
        return h - bottom - (h - top - bottom) * (v - y0) / (y1 - y0)
    body = []
    for e in range(math.floor(x0), math.ceil(x1) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if x0 <= math.log10(v) <= x1:
                body.append(f'<line x1="{X(v):.1f}" y1="{top}" x2="{X(v):.1f}" y2="{h - bottom}" stroke="{GRID}"/>')
                body.append(f'<text x="{X(v):.1f}" y="{h - bottom + 16}" text-anchor="middle">{v:g}</text>')
    step = 10 ** math.floor(math.log10(max(1e-9, (y1 - y0) / 6)))
    step *= 5 if (y1 - y0) / step > 30 else 2 if (y1 - y0) / step > 12 else 1
    v = math.ceil(y0 / step) * step
    while v <= y1:
        body.append(f'<line x1="{left}" y1="{Y(v):.1f}" x2="{w - right}" y2="{Y(v):.1f}" stroke="{GRID}"/>')
        body.append(f'<text x="{left - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    body.append(f'<text x="{(left + w - right) / 2}" y="{h - 18}" text-anchor="middle">wall time, s (median, log scale)</text>')
    body.append(f'<text x="18" y="{(top + h - bottom) / 2}" text-anchor="middle" transform="rotate(-90 18 {(top + h - bottom) / 2})">layer size, MB</text>')
    for tool, color in (("kiln", KILN), ("peer", PEER)):
        fr = pareto([p for p in pts if p["tool"] == tool])
        path = " ".join(f"{'M' if i == 0 else 'L'}{X(p['s']):.1f},{Y(p['b'] / 1e6):.1f}" for i, p in enumerate(fr))
        body.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{"" if tool == "kiln" else "6 4"}"/>')
        for p in pts:
            if p["tool"] != tool:
                continue
            cx, cy = X(p["s"]), Y(p["b"] / 1e6)
            shape = (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{color}"/>' if tool == "kiln" else
                     f'<rect x="{cx - 4:.1f}" y="{cy - 4:.1f}" width="8" height="8" fill="{color}"/>')
            body.append(shape + f'<text x="{cx + 6:.1f}" y="{cy - 5:.1f}" font-size="9" fill="{color}">{escape(p["label"])}</text>')
    body.append(f'<circle cx="{w - 250}" cy="{top + 10}" r="4" fill="{KILN}"/><text x="{w - 240}" y="{top + 14}">kiln layer (front: solid)</text>')
    body.append(f'<rect x="{w - 254}" y="{top + 26}" width="8" height="8" fill="{PEER}"/><text x="{w - 240}" y="{top + 34}">peers (front: dashed)</text>')
    title = "1 directory → 1 layer blob: size against time, every setting"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" {FONT} font-size="11">\n'
            f'<title>{escape(title)}</title>\n<rect width="{w}" height="{h}" fill="white"/>\n'
            f'<text x="{w / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{escape(title)}</text>\n'
            + "\n".join(body) + "\n</svg>\n")


def front(out, runs, rows, T, svgs):
    pts = _front_points(rows)
    if not pts:
        return []
    kiln = [p for p in pts if p["tool"] == "kiln"]
    peers = [p for p in pts if p["tool"] == "peer"]
    corpus = next((r for r in _tsv(f"{out}/front.tsv") if r[0] == "corpus"), None)
    tree = f"`{corpus[1]}`, {int(corpus[2]) / 2**20:.0f} MiB in {corpus[3]} entries" if corpus else "the corpus"
    L = ["## The size/speed front (front)", "",
         f"One directory ({tree}) to one compressed layer blob, every setting: `kiln layer --compression gzip:1…9,",
         "zstd:1…19` against `tar | pigz -1…-9 -p 2`, `tar | gzip -6` (one core), `tar | zstd -1…-19 -T2` (each `| tee",
         "FILE | sha256sum`), `umoci insert` and buildah's commit (`buildah bud` of `FROM scratch` + `COPY` to a gzip",
         "oci-archive). Medians over the runs given (`runs`); the slow settings have fewer runs (see front.sh).", "",
         "![size against time, both fronts](bench/front.svg)", "",
         "| setting | runs | median s | cpu s | size MB | on its front | beaten by a kiln setting of the same format "
         "(smaller and faster) | … of either format |",
         "|---|---:|---:|---:|---:|---|---|---|"]
    kf = {id(p) for p in pareto(kiln)}
    pf = {id(p) for p in pareto(peers)}
    missed, missed_any = [], []
    for p in sorted(pts, key=lambda p: (p["tool"] != "kiln", p["s"])):
        same = anyf = ""
        if p["tool"] == "peer":
            ok, k, same = _beaten(p, [k for k in kiln if k["fmt"] == p["fmt"]])
            if not ok:
                missed.append((p, k))
            ok, k, anyf = _beaten(p, kiln)
            if not ok:
                missed_any.append((p, k))
        on = "yes" if id(p) in (kf if p["tool"] == "kiln" else pf) else ""
        L.append(f"| {escape(p['label'])} | {p['n']} | {p['s']:.2f} | {p['cpu']:.1f} | {p['b'] / 1e6:.1f} | {on} | {same} | {anyf} |")
    L.append("")
    for what, miss in (("of the same format (gzip for gzip, zstd for zstd)", missed), ("of either format", missed_any)):
        T.append(dict(target=f"front: every peer setting is beaten by some kiln setting {what}, smaller and faster",
                      value=f"{len(peers) - len(miss)} of {len(peers)} peer settings beaten"
                      + ("; not: " + "; ".join(f"{p['label']} (closest {k['label']}: {k['s'] / p['s']:.2f}× time, "
                                              f"{(k['b'] / p['b'] - 1) * 100:+.2f}% size)" for p, k in miss) if miss else ""),
                      met=not miss, margin=f"{len(miss)} not beaten"))
    a, b = runs.get("front kiln gzip", []), runs.get("front umoci insert", [])
    if a and b:
        rb = {r["round"]: r["wall"] for r in b}
        ratio = _med([r["wall"] / rb[r["round"]] for r in a if r["round"] in rb])
        sk, su = rows["front kiln gzip"]["size_bytes"], rows["front umoci insert"]["size_bytes"]
        if ratio is not None and sk and su:
            T.append(dict(target="front: kiln's default gzip at ≤ umoci insert's size in ≤ 0.55× its time",
                          value=f"{ratio:.3f}×, size {sk / 1e6:.1f} vs {su / 1e6:.1f} MB ({(sk / su - 1) * 100:+.2f}%)",
                          met=ratio <= 0.55 and sk <= su, margin=f"{ratio / 0.55:.2f}× the target"))
    svgs["front.svg"] = front_svg(pts)
    return L


# ---------------------------------------------------------------- scale, extended


def _slope(pts):
    pts = [(math.log10(x), math.log10(y)) for x, y in pts if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx, my = st.mean(p[0] for p in pts), st.mean(p[1] for p in pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def scale(rows, T):
    layer = {n: r for n, r in rows.items() if r["section"] == "scale" and not n.startswith("scale build")}
    if layer:
        worst = max(layer.values(), key=lambda r: r["peak_mib"])
        T.append(dict(target="scale: kiln layer's peak RSS ≤ 64 MiB on every tree (up to the largest file count and size measured)",
                      value=f"{worst['peak_mib']:.1f} MiB ({worst['name'][6:]})", met=worst["peak_mib"] <= 64,
                      margin=f"{worst['peak_mib'] / 64:.2f}× the target"))
    cold = {int(n.split()[3]): r for n, r in rows.items() if n.startswith("scale build files") and n.endswith(" cold")}
    if not cold:
        return []
    one = {int(n.split()[3]): r for n, r in rows.items() if n.startswith("scale build files") and n.endswith(" onefile")}
    L = ["## COPY builds of the file trees (scale)", "",
         "`FROM scratch` + `COPY . /data/` of each synthetic tree, kiln build as root into an empty store (cold), then",
         "again after one file of the context was replaced (one file).", "",
         "| files | cold s | cold peak RSS MiB | one file changed s | peak MiB | one file / cold |", "|---:|---:|---:|---:|---:|---:|"]
    for n in sorted(cold):
        c, o = cold[n], one.get(n)
        L.append(f"| {n:,} | {c['median_s']:.2f} | {c['peak_mib']:.1f} | {_f(o and o['median_s'])} | {_f(o and o['peak_mib'], 1)} | "
                 f"{_f(o and o['median_s'] / c['median_s'], 3)} |")
    L.append("")
    k = _slope([(n, r["median_s"]) for n, r in cold.items()])
    if k is not None:
        T.append(dict(target="scale: COPY build time linear in files (log-log slope ≤ 1.1)", value=f"slope {k:.2f} over {min(cold):,}–{max(cold):,} files",
                      met=k <= 1.1, margin=f"slope {k:.2f} vs 1.1"))
    peak = max(r["peak_mib"] for r in list(cold.values()) + list(one.values()))
    T.append(dict(target="scale: COPY build's peak RSS (its file index) ≤ 256 MiB", value=f"{peak:.1f} MiB (up to {max(cold):,} files)",
                  met=peak <= 256, margin=f"{peak / 256:.2f}× the target"))
    n = max(cold)
    if n in one:
        r = one[n]["median_s"] / cold[n]["median_s"]
        T.append(dict(target=f"scale: one file changed in the {n:,}-file context rebuilds in ≤ 0.05× the cold build",
                      value=f"{r:.3f}× ({one[n]['median_s']:.1f} s vs {cold[n]['median_s']:.1f} s)", met=r <= 0.05,
                      margin=f"{r / 0.05:.2f}× the target"))
    return L


def extra(out, runs, rows, results):
    T = results["targets"]
    svgs = {}
    lines = (family(out, runs, rows, T) + transfer(out, T) + concurrency(out, T) + front(out, runs, rows, T, svgs)
             + scale(rows, T))
    return svgs, lines
