#!/usr/bin/env python3
"""plot_bench.py OUT [--docs DIR] - turn scripts/bench.sh's raw results into numbers and pictures.

Reads OUT/runs.tsv, sizes.tsv, scale.tsv, meta.tsv, lscpu.txt, json/*.json (and profile.txt),
writes OUT/results.json and OUT/results.csv and the SVG plots (hand-written SVG, Python standard
library only), prints the table of ratios, and with --docs writes DIR/BENCHMARKS.md and
DIR/bench/{*.svg,results.json,runs.tsv}.
"""
import csv
import glob
import json
import math
import os
import shutil
import statistics as st
import sys
from html import escape

# ---------------------------------------------------------------- inputs


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def load(out):
    runs = {}  # name -> list of dict(round, wall, peak, user, sys, load, section)
    for section, name, rnd, wall, peak, user, sys_, load1 in read_tsv(f"{out}/runs.tsv"):
        runs.setdefault(name, []).append(dict(section=section, round=int(rnd), wall=float(wall),
                                              peak=int(peak), cpu=float(user) + float(sys_), user=float(user),
                                              load=float(load1)))
    sizes = {}
    for name, rnd, b in read_tsv(f"{out}/sizes.tsv"):
        if b and b != "0":
            sizes.setdefault(name, {})[int(rnd)] = int(b)
    meta = {}
    for row in read_tsv(f"{out}/meta.tsv"):
        if row[0] == "measured" and len(row) > 2:
            MEASURED[row[1]] = row[2]
            continue
        meta[row[0]] = row[1:] if len(row) > 2 else row[1]
    stats = {}  # slug -> list of kiln --json dicts
    for p in sorted(glob.glob(f"{out}/json/*.json")):
        slug = os.path.basename(p).rsplit("-", 1)[0]
        try:
            stats.setdefault(slug, []).append(json.load(open(p)))
        except ValueError:
            pass
    scale = [dict(kind=k, tag=t, dir=d, bytes=int(b), files=int(n))
             for k, t, d, b, n in read_tsv(f"{out}/scale.tsv")]
    return runs, sizes, meta, stats, scale


def slug(name):
    return "".join(c if c.isalnum() or c == "." else "_" for c in name)


# ---------------------------------------------------------------- numbers


def med(xs):
    return st.median(xs) if xs else None


def summary(runs, sizes):
    rows = {}
    for name, rs in runs.items():
        walls = [r["wall"] for r in rs]
        rows[name] = dict(name=name, section=rs[0]["section"], n=len(rs), median_s=med(walls),
                          min_s=min(walls), max_s=max(walls), cpu_s=med([r["cpu"] for r in rs]),
                          peak_mib=max(r["peak"] for r in rs) / 1024,
                          size_bytes=med(list(sizes.get(name, {}).values())) if name in sizes else None)
    return rows


def paired_ratio(a, b):
    """Median of per-round ratios a/b (the rounds were taken as alternated pairs)."""
    ra = {r["round"]: r["wall"] for r in a}
    rb = {r["round"]: r["wall"] for r in b}
    rs = [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k] > 0]
    return (med(rs), rs) if rs else (None, [])


PAIRS = [  # (kiln case, peer case, target ratio or None, size rule, label, short label)
    ("kiln layer gzip", "umoci insert", 0.75, "le", "default gzip layer vs umoci insert", "gzip layer (default)"),
    ("kiln layer gzip:6", "tar|pigz -6|sha256sum", 0.45, "1%", "gzip -6 layer vs tar | pigz -6 | sha256sum", "gzip -6 layer"),
    ("kiln layer zstd:3", "tar|zstd -3 -T2|sha256sum", 1.0, None, "zstd -3 layer vs tar | zstd -3 -T2 | sha256sum", "zstd -3 layer"),
    ("kiln build cold", "buildah bud cold", 0.35, None, "COPY build, cold, vs buildah bud", "COPY build, cold"),
    ("kiln build warm", "buildah bud warm", 0.02, None, "COPY build, warm (nothing changed), vs buildah bud", "COPY build, warm"),
    ("kiln build onefile", "buildah bud onefile", None, None, "COPY build after one file changed vs buildah bud", "COPY build, one file changed"),
    ("kiln run true", "buildah run true", 0.25, None, "20 × RUN true (rootless) vs buildah bud", "20 × RUN true"),
    ("kiln run big", "buildah run big", 0.25, None, "one-file RUN in the ≥1 GiB image (rootless) vs buildah bud", "one-file RUN, 1 GiB image"),
    ("kiln build minimal", "buildah bud minimal", None, None, "variants/Dockerfile.minimal on Debian (rootless) vs buildah bud", "Dockerfile.minimal"),
    ("kiln build multiarch", "buildah bud multiarch", 0.8, None, "Dockerfile.minimal + a $BUILDPLATFORM stage, linux/amd64 + linux/arm64 under QEMU (rootless) vs buildah bud --manifest", "Dockerfile.minimal, 2 platforms"),
    ("kiln push cold", "skopeo copy cold", 1.0, None, "push, cold (new repository), vs skopeo copy", "push, cold"),
    ("kiln push warm", "skopeo copy warm", 1.0, None, "push, warm (blobs present), vs skopeo copy", "push, warm"),
    # issue #21 (scripts/bench/report.py renders the rest of these sections)
    ("kiln family minimal", "buildah family minimal", None, None, "variants/Dockerfile.minimal, cold, local package cache (rootless) vs buildah bud", "family: minimal, cold"),
    ("kiln family python", "buildah family python", None, None, "variants/Dockerfile.python, cold, local package cache (rootless) vs buildah bud", "family: python, cold"),
    ("kiln family node", "buildah family node", None, None, "variants/Dockerfile.node, cold, local package cache (rootless) vs buildah bud", "family: node, cold"),
    ("kiln family full", "buildah family full", 0.6, None, "variants/Dockerfile (full), cold, local package cache (rootless) vs buildah bud", "family: full, cold"),
    ("kiln pull", "skopeo copy docker:// oci:", 0.6, None, "pull of the corpus image from a local registry vs skopeo copy docker:// oci:", "pull"),
    ("kiln RUN base unpack", "umoci unpack --rootless", 0.5, None, "the base unpack of a RUN step (FROM corpus; RUN true, rootless) vs umoci unpack --rootless", "RUN base unpack"),
    ("kiln copy docker-archive", "skopeo copy docker-archive", 0.5, None, "copy to a docker-archive vs skopeo copy", "copy to docker-archive"),
    ("kiln copy oci-archive", "skopeo copy oci-archive", 0.5, None, "copy to an oci-archive vs skopeo copy", "copy to oci-archive"),
    ("kiln pull 5 layers, 4 present", "skopeo copy 5 layers, 4 present", None, None, "pull of a 5-layer image, 4 layers present, vs skopeo copy to an OCI layout", "pull, 4 of 5 layers present"),
    ("kiln 4 variants par", "kiln 4 variants seq", 1.05, None, "four variant builds at once vs the same four in a row (kiln alone)", "4 builds at once / in a row"),
]


def jstat(stats, name):
    return stats.get(slug(name), [])


def mb_s(nbytes, secs):
    return nbytes / 1e6 / secs if secs else None


def stages(rows, stats, meta):
    """Per-stage throughput of kiln against the ceiling measured on this machine, MB/s."""
    out = []
    tar_bytes = float(meta.get("tar_bytes", 0) or 0)
    sample = float(meta.get("sample_bytes", 0) or 0)
    none = jstat(stats, "kiln layer none")
    if none and tar_bytes:
        s = [j["stats"] for j in none]
        walk_tar = med([mb_s(x["bytes_tarred"], x["walk_seconds"] + x["read_seconds"]) for x in s])
        if "tar|cat" in rows:
            out.append(dict(stage="walk + read + tar", kiln=walk_tar,
                            ceiling=mb_s(tar_bytes, rows["tar|cat"]["median_s"]),
                            ceiling_name="GNU tar -cf - | cat", note="kiln: walk + read busy seconds"))
        hashes = med([mb_s(x["bytes_hashed"], x.get("hash_cpu_seconds") or x["hash_seconds"]) for x in s])
        if "openssl dgst -sha256" in rows:
            o = rows["openssl dgst -sha256"]
            out.append(dict(stage="SHA-256", kiln=hashes,
                            ceiling=max(mb_s(tar_bytes, o["median_s"]), mb_s(tar_bytes, med([r["user"] for r in _RUNS["openssl dgst -sha256"]])) or 0),
                            ceiling_name="openssl -sha256 (SHA-NI)",
                            note=f"kiln: hash CPU seconds; ceiling: openssl's user seconds ({fmt(mb_s(tar_bytes, o['median_s']))} MB/s by its wall time)"))
        out.append(dict(stage="layer, none (whole process)", kiln=med([mb_s(x["bytes_tarred"], r["wall"])
                        for x, r in zip(s, sorted(runs_of(rows, "kiln layer none"), key=lambda r: r["round"]))]),
                        ceiling=mb_s(tar_bytes, rows["tar|cat"]["median_s"]) if "tar|cat" in rows else None,
                        ceiling_name="GNU tar -cf - | cat", note="wall time of the process"))
    for comp, single, pipe in (("gzip:6", "gzip -6 (1 core, sample)", "tar|pigz -6|sha256sum"),
                               ("zstd:3", "zstd -3 -T1 (1 core, sample)", "tar|zstd -3 -T2|sha256sum")):
        js = jstat(stats, f"kiln layer {comp}")
        if not js or single not in rows or not sample:
            continue
        s = [j["stats"] for j in js]
        core = mb_s(sample, rows[single]["median_s"])
        per_thread = med([mb_s(x["bytes_compressed_in"], x["compress_seconds"]) for x in s])
        threads = max(x["compress_threads"] for x in s) or 1
        out.append(dict(stage=f"{comp.split(':')[0]} -{comp.split(':')[1]}, per core", kiln=per_thread,
                        ceiling=core, ceiling_name=f"{single.split(' (')[0]} on one core",
                        note="kiln: compressed input / busy seconds summed over threads" if comp.startswith("gzip")
                        else "kiln: input / seconds the pipeline waited on libzstd's workers (not busy time)"))
        whole = med([mb_s(x["bytes_tarred"], x["wall_seconds"]) for x in s])
        out.append(dict(stage=f"{comp.split(':')[0]} -{comp.split(':')[1]}, whole layer", kiln=whole,
                        ceiling=core * threads, ceiling_name=f"{threads} × one core",
                        note=f"peer pipeline: {mb_s(tar_bytes, rows[pipe]['median_s']):.0f} MB/s" if pipe in rows and tar_bytes else ""))
    return out


_RUNS = {}
MEASURED = {}  # section -> "start time (commit)" of the run that measured it (meta.tsv)


def runs_of(rows, name):
    return _RUNS.get(name, [])


def fit_loglog(points):
    """Least-squares slope and intercept of log10(y) on log10(x)."""
    pts = [(math.log10(x), math.log10(y)) for x, y in points if x > 0 and y > 0]
    if len(pts) < 2:
        return None, None
    mx = st.mean(p[0] for p in pts)
    my = st.mean(p[1] for p in pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None, None
    k = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return k, my - k * mx


def scaling(scale, stats, runs):
    out = {"bytes": [], "files": []}
    for t in scale:
        name = f"scale {t['kind']} {t['tag']}"
        rs = runs.get(name, [])
        js = jstat(stats, name)
        if not rs:
            continue
        out[t["kind"]].append(dict(tag=t["tag"], tree_bytes=t["bytes"], files=t["files"],
                                   tar_bytes=med([j["uncompressed_size"] for j in js]) if js else t["bytes"],
                                   entries=med([j["stats"]["files_walked"] for j in js]) if js else t["files"],
                                   median_s=med([r["wall"] for r in rs]),
                                   peak_mib=max(r["peak"] for r in rs) / 1024,
                                   mb_s=mb_s(med([j["uncompressed_size"] for j in js]) if js else t["bytes"],
                                             med([r["wall"] for r in rs]))))
    fits = {}
    for kind, xkey in (("bytes", "tar_bytes"), ("files", "entries")):
        pts = [(p[xkey], p["median_s"]) for p in out[kind]]
        k, c = fit_loglog(pts)
        k_big, _ = fit_loglog(pts[1:]) if len(pts) > 2 else (None, None)
        kr, _ = fit_loglog([(p[xkey], p["peak_mib"]) for p in out[kind]])
        fits[kind] = dict(time_exponent=k, intercept=c, time_exponent_without_smallest=k_big, rss_exponent=kr)
    return out, fits


# ---------------------------------------------------------------- SVG

FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
KILN, PEER, GRID = "#d9480f", "#1c7ed6", "#dee2e6"


def svg_doc(w, h, body, title):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" {FONT} font-size="12">\n'
            f'<title>{escape(title)}</title>\n<rect width="{w}" height="{h}" fill="white"/>\n'
            f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{escape(title)}</text>\n'
            + "\n".join(body) + "\n</svg>\n")


def fmt(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def bars_svg(items, title, unit, series=("kiln", "ceiling"), colors=(KILN, PEER), log=False, targets=None):
    """Horizontal grouped bars: items = [(label, [v1, v2], [name1, name2])]."""
    left, right, top, bh = 260, 150, 50, 16
    w = 900
    gh = bh * len(series) + 14
    h = top + gh * len(items) + 60
    vals = [v for _, vs, _ in items for v in vs if v]
    if targets:
        vals += [t for t in targets if t]
    if not vals:
        return svg_doc(w, 80, ['<text x="20" y="50">no data</text>'], title)
    if log:
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        def X(v): return left + (w - left - right) * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        ticks = [10 ** e for e in range(int(math.log10(lo)), int(math.log10(hi)) + 1)]
    else:
        hi = max(vals) * 1.05
        step = 10 ** math.floor(math.log10(hi))
        if hi / step < 3:
            step /= 2
        def X(v): return left + (w - left - right) * v / hi
        ticks = [i * step for i in range(int(hi / step) + 1)]
    body = []
    for t in ticks:
        x = X(t)
        body.append(f'<line x1="{x:.1f}" y1="{top - 5}" x2="{x:.1f}" y2="{h - 45}" stroke="{GRID}"/>')
        body.append(f'<text x="{x:.1f}" y="{h - 30}" text-anchor="middle" fill="#495057">{fmt(t)}</text>')
    body.append(f'<text x="{left + (w - left - right) / 2}" y="{h - 10}" text-anchor="middle">{escape(unit)}</text>')
    for i, (label, vs, names) in enumerate(items):
        y0 = top + i * gh
        body.append(f'<text x="{left - 8}" y="{y0 + gh / 2}" text-anchor="end" dominant-baseline="middle">{escape(label)}</text>')
        for j, v in enumerate(vs):
            y = y0 + j * bh
            x0 = X(ticks[0]) if log else left
            if v:
                tx = max(X(v), X(targets[i]) if targets and targets[i] else 0)
                body.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(1, X(v) - x0):.1f}" height="{bh - 2}" fill="{colors[j]}"/>')
                body.append(f'<text x="{tx + 5:.1f}" y="{y + bh / 2}" dominant-baseline="middle" font-size="11">{fmt(v)} {escape(names[j] if names else "")}</text>')
        if targets and targets[i]:
            x = X(targets[i])
            body.append(f'<line x1="{x:.1f}" y1="{y0 - 2}" x2="{x:.1f}" y2="{y0 + gh - 12}" stroke="black" stroke-width="2" stroke-dasharray="4,2"/>')
    lx = left
    for j, s in enumerate(series):
        body.append(f'<rect x="{lx}" y="32" width="12" height="10" fill="{colors[j]}"/><text x="{lx + 16}" y="41">{escape(s)}</text>')
        lx += 20 + 8 * len(s)
    if targets:
        body.append(f'<line x1="{lx}" y1="37" x2="{lx + 20}" y2="37" stroke="black" stroke-width="2" stroke-dasharray="4,2"/><text x="{lx + 24}" y="41">target</text>')
    return svg_doc(w, h, body, title)


def loglog_svg(series, title, xlabel, ylabel, xfmt=None):
    """series = [(name, color, [(x, y, label)], fit(k, c) or None)]; log-log axes."""
    w, h, left, right, top, bottom = 720, 460, 80, 30, 50, 60
    xs = [p[0] for _, _, pts, _ in series for p in pts]
    ys = [p[1] for _, _, pts, _ in series for p in pts]
    if not xs:
        return svg_doc(w, 80, ['<text x="20" y="50">no data</text>'], title)
    x0, x1 = math.floor(math.log10(min(xs) * 0.8)), math.ceil(math.log10(max(xs) * 1.25))
    y0, y1 = math.floor(math.log10(min(ys) * 0.8)), math.ceil(math.log10(max(ys) * 1.25))
    x1 = max(x1, x0 + 1); y1 = max(y1, y0 + 1)
    def X(v): return left + (w - left - right) * (math.log10(v) - x0) / (x1 - x0)
    def Y(v): return h - bottom - (h - top - bottom) * (math.log10(v) - y0) / (y1 - y0)
    def ticks(e0, e1):  # 1, 2, 5 × each power of ten from 10^e0 up to 10^e1, as (value, m)
        return [(m * 10 ** e, m) for e in range(e0, e1 + 1) for m in (1, 2, 5) if m * 10 ** e <= 10 ** e1]
    body = []
    for v, m in ticks(x0, x1):
        body.append(f'<line x1="{X(v):.1f}" y1="{top}" x2="{X(v):.1f}" y2="{h - bottom}" stroke="{GRID}"/>')
        if m == 1:
            body.append(f'<text x="{X(v):.1f}" y="{h - bottom + 16}" text-anchor="middle" fill="#495057">{escape((xfmt or fmt)(v))}</text>')
    for v, m in ticks(y0, y1):
        body.append(f'<line x1="{left}" y1="{Y(v):.1f}" x2="{w - right}" y2="{Y(v):.1f}" stroke="{GRID}"/>')
        body.append(f'<text x="{left - 6}" y="{Y(v) + 4:.1f}" text-anchor="end" fill="#495057" font-size="{11 if m == 1 else 9}">{v:g}</text>')
    body.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" stroke="#868e96"/>')
    body.append(f'<text x="{left + (w - left - right) / 2}" y="{h - 18}" text-anchor="middle">{escape(xlabel)}</text>')
    body.append(f'<text transform="translate(18 {top + (h - top - bottom) / 2}) rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>')
    ly = top + 16
    for name, color, pts, fit in series:
        pts = sorted(pts)
        if len(pts) > 1:
            body.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (
                color, " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y, _ in pts)))
        for x, y, label in pts:
            body.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="4" fill="{color}"/>')
            if label:
                body.append(f'<text x="{X(x) + 6:.1f}" y="{Y(y) - 6:.1f}" font-size="10" fill="{color}">{escape(label)}</text>')
        legend = name
        if fit and fit[0] is not None:
            k, c = fit
            a, b = min(p[0] for p in pts), max(p[0] for p in pts)  # the fit over the measured range
            ya, yb = 10 ** (c + k * math.log10(a)), 10 ** (c + k * math.log10(b))
            body.append(f'<line x1="{X(a):.1f}" y1="{Y(ya):.1f}" x2="{X(b):.1f}" y2="{Y(yb):.1f}" stroke="{color}" stroke-dasharray="5,4" opacity="0.6"/>')
            legend += f" (fit: ∝ x^{k:.2f})"
        body.append(f'<rect x="{left + 10}" y="{ly - 9}" width="12" height="10" fill="{color}"/><text x="{left + 26}" y="{ly}">{escape(legend)}</text>')
        ly += 16
    body.append(f'<defs><clipPath id="c"><rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}"/></clipPath></defs>')
    return svg_doc(w, h, body, title)


def human_bytes(v):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v >= div:
            return f"{v / div:.0f} {unit}" if v / div >= 10 else f"{v / div:.1f} {unit}"
    return f"{v:.0f} B"


def human_count(v):
    return f"{v / 1000:.0f}k" if v >= 1000 else f"{v:.0f}"


# ---------------------------------------------------------------- report


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    out = args[0]
    docs = args[args.index("--docs") + 1] if "--docs" in args else None
    runs, sizes, meta, stats, scale = load(out)
    _RUNS.update(runs)
    rows = summary(runs, sizes)
    results = dict(meta=meta, cases=rows, pairs=[], targets=[], stages=[], scaling={},
                   failures=read_tsv(f"{out}/failures.tsv"))

    # pairs
    for a, b, target, size_rule, label, short in PAIRS:
        if a not in runs or b not in runs:
            continue
        r, per = paired_ratio(runs[a], runs[b])
        ca = {x["round"]: x["cpu"] for x in runs[a]}
        cb = {x["round"]: x["cpu"] for x in runs[b]}
        cpu_ratio = med([ca[k] / cb[k] for k in ca if k in cb and cb[k] > 0])
        p = dict(kiln=a, peer=b, label=label, short=short, ratio=r, per_round=per, target=target, cpu_ratio=cpu_ratio,
                 met=None if target is None or r is None else r <= target,
                 kiln_s=rows[a]["median_s"], peer_s=rows[b]["median_s"])
        sa, sb = rows[a]["size_bytes"], rows[b]["size_bytes"]
        if size_rule and sa and sb:
            p["size_kiln"], p["size_peer"] = sa, sb
            p["size_rule"] = "≤ peer's" if size_rule == "le" else "within 1%"
            p["size_met"] = sa <= sb if size_rule == "le" else abs(sa / sb - 1) <= 0.01
        results["pairs"].append(p)

    # SHA-256 against the SHA-NI ceiling, paired per round. The target is judged on CPU time:
    # kiln's `hash_cpu_seconds` (the hashing thread's CPU time inside its SHA-256 calls) against
    # openssl's user seconds over the same bytes, so neither side is charged for waiting
    # for a core on a shared machine. The wall ratio (kiln's hash busy seconds / openssl's wall)
    # is shown too. Results from a kiln without `hash_cpu_seconds` fall back to its busy seconds.
    none = sorted(zip([r["round"] for r in runs.get("kiln layer none", [])], jstat(stats, "kiln layer none")))
    ossl = {r["round"]: r["wall"] for r in runs.get("openssl dgst -sha256", [])}
    # openssl's user seconds: its SHA-NI compute alone (its sys time is reading the file).
    ossl_cpu = {r["round"]: r["user"] for r in runs.get("openssl dgst -sha256", [])}

    def hash_cpu(j):
        return j["stats"].get("hash_cpu_seconds") or j["stats"]["hash_seconds"]

    hr = [j["stats"]["hash_seconds"] / ossl[k] for k, j in none if k in ossl and ossl[k] > 0]
    hc = [hash_cpu(j) / ossl_cpu[k] for k, j in none if ossl_cpu.get(k)]
    sha = None
    if hr:
        sha = dict(label="SHA-256 stage vs openssl dgst -sha256 (SHA-NI) on the same tar bytes",
                   ratio=med(hr), per_round=hr, target=1.05, cpu_ratio=med(hc) if hc else None,
                   cpu_per_round=hc, cpu_best=min(hc) if hc else None,
                   met=(med(hc) <= 1.05) if hc else med(hr) <= 1.05,
                   ceiling_cpu_mb_s=mb_s(float(meta.get("tar_bytes", 0)), med(list(ossl_cpu.values()))) if ossl_cpu else None,
                   kiln_mb_s=med([mb_s(j["stats"]["bytes_hashed"], hash_cpu(j)) for _, j in none]),
                   ceiling_mb_s=mb_s(float(meta.get("tar_bytes", 0)), rows["openssl dgst -sha256"]["median_s"]))
        results["sha256"] = sha

    results["stages"] = stages(rows, stats, meta)
    sc, fits = scaling(scale, stats, runs)
    results["scaling"] = dict(points=sc, fits=fits)

    # peak RSS for a 1 GiB layer: every kiln layer run on the corpus when it is ≥1 GiB, and the 1 GiB scaling tree
    big_names = [name for name in runs if name.startswith("kiln layer")]
    corpus_bytes = int(meta["corpus"][1]) if isinstance(meta.get("corpus"), list) else 0
    rss_1g = None
    if corpus_bytes >= 1 << 30 and big_names:
        rss_1g = max(rows[n]["peak_mib"] for n in big_names)
    for p in sc.get("bytes", []):
        if p["tag"] == "1g":
            rss_1g = max(rss_1g or 0, p["peak_mib"])

    # targets, one line each
    T = results["targets"]
    for p in results["pairs"]:
        if p["target"] is None:
            continue
        line = dict(target=f"{p['label']}: ≤ {p['target']}×", value=f"{p['ratio']:.3f}×", met=p["met"],
                    margin=f"{p['ratio'] / p['target']:.2f}× the target")
        if "size_met" in p:
            line["target"] += f", size {p['size_rule']}"
            line["value"] += f", size {p['size_kiln'] / 1e6:.1f} vs {p['size_peer'] / 1e6:.1f} MB ({(p['size_kiln'] / p['size_peer'] - 1) * 100:+.2f}%)"
            line["met"] = p["met"] and p["size_met"]
            if not p["size_met"]:
                line["margin"] += f"; size {(p['size_kiln'] / p['size_peer'] - 1) * 100:+.2f}%"
        T.append(line)
    if sha:
        if sha.get("cpu_ratio") is not None:
            value = (f"{sha['cpu_ratio']:.3f}× by CPU time ({sha['kiln_mb_s']:.0f} vs {sha['ceiling_cpu_mb_s']:.0f} MB/s), "
                     f"best round {sha['cpu_best']:.3f}×; by wall {sha['ratio']:.3f}× (openssl {sha['ceiling_mb_s']:.0f} MB/s)")
            ratio = sha["cpu_ratio"]
        else:
            value = f"{sha['ratio']:.3f}× ({sha['kiln_mb_s']:.0f} vs {sha['ceiling_mb_s']:.0f} MB/s)"
            ratio = sha["ratio"]
        T.append(dict(target="SHA-256 within 5% of the SHA-NI ceiling on the same bytes (kiln's hash CPU seconds / openssl dgst's user seconds ≤ 1.05)",
                      value=value, met=sha["met"], margin=f"{ratio / 1.05:.2f}× the target"))
    if rss_1g is not None:
        T.append(dict(target="peak RSS ≤ 64 MiB for a 1 GiB layer", value=f"{rss_1g:.1f} MiB (max over every kiln layer run of the 1 GiB tree)",
                      met=rss_1g <= 64, margin=f"{rss_1g / 64:.2f}× the target"))
    for kind, what in (("bytes", "bytes"), ("files", "files")):
        f = fits.get(kind, {})
        if f.get("time_exponent") is not None:
            k = f["time_exponent"]
            extra = f", {f['time_exponent_without_smallest']:.2f} without the smallest tree" if f.get("time_exponent_without_smallest") is not None else ""
            T.append(dict(target=f"time linear in {what} (log-log slope ≤ 1.1)", value=f"exponent {k:.2f}{extra}", met=k <= 1.1,
                          margin=f"slope {k:.2f} vs 1.1"))

    # issue #21's sections: targets of their own, the front plot, their markdown
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"))
    import report  # scripts/bench/report.py
    extra_svgs, extra_md = report.extra(out, runs, rows, results)

    # ---- files
    with open(f"{out}/results.json", "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(f"{out}/results.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["case", "section", "runs", "median_s", "min_s", "max_s", "cpu_s", "peak_mib", "size_bytes"])
        for r in rows.values():
            wr.writerow([r["name"], r["section"], r["n"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}", f"{r['max_s']:.3f}",
                         f"{r['cpu_s']:.2f}", f"{r['peak_mib']:.1f}", r["size_bytes"] or ""])

    svgs = {}
    if results["stages"]:
        items = [(s["stage"], [s["kiln"], s["ceiling"]], ["", s["ceiling_name"]]) for s in results["stages"]]
        svgs["stages.svg"] = bars_svg(items, "kiln's throughput per stage against this machine's ceiling", "MB/s (10^6 bytes per second, log scale)",
                                      series=("kiln", "ceiling measured in the same run"), log=True)
    if results["pairs"]:
        items = [(p["short"], [p["ratio"]], [f"× {p['peer'].split(' ')[0].split('|')[-1]}"]) for p in results["pairs"] if p["ratio"]]
        if sha:
            strict = max(sha["ratio"], sha.get("cpu_ratio") or 0)
            items.append(("SHA-256 stage", [strict], ["× openssl (the stricter of wall, user time)"]))
        tg = [p["target"] for p in results["pairs"] if p["ratio"]] + ([1.05] if sha else [])
        svgs["ratios.svg"] = bars_svg(items, "kiln time / peer time (median of alternated pairs; lower is better)",
                                      "ratio (log scale)", series=("kiln / peer",), colors=(KILN,), log=True, targets=tg)
    if sc.get("bytes"):
        pts = sc["bytes"]
        svgs["scale-bytes.svg"] = loglog_svg(
            [("wall time, s", KILN, [(p["tar_bytes"] / 2**20, p["median_s"], f"{human_bytes(p['tree_bytes'])}: {fmt(p['median_s'])} s") for p in pts],
              (fits["bytes"]["time_exponent"], fits["bytes"]["intercept"] + fits["bytes"]["time_exponent"] * math.log10(2**20))),
             ("peak RSS, MiB", PEER, [(p["tar_bytes"] / 2**20, p["peak_mib"], f"{p['peak_mib']:.0f} MiB") for p in pts], None)],
            "kiln layer (gzip) against tree size, log-log", "tar stream, MiB", "seconds / MiB", lambda v: f"{v:g} MiB")
    if sc.get("files"):
        pts = sc["files"]
        svgs["scale-files.svg"] = loglog_svg(
            [("wall time, s", KILN, [(p["entries"], p["median_s"], f"{human_count(p['files'])} files: {fmt(p['median_s'])} s") for p in pts],
              (fits["files"]["time_exponent"], fits["files"]["intercept"])),
             ("peak RSS, MiB", PEER, [(p["entries"], p["peak_mib"], f"{p['peak_mib']:.0f} MiB") for p in pts], None)],
            "kiln layer (gzip) against file count, log-log", "entries in the tree", "seconds / MiB", lambda v: f"{v:g}")
    svgs.update(extra_svgs)
    for name, text in svgs.items():
        with open(f"{out}/{name}", "w") as f:
            f.write(text)

    # ---- console
    print(f"{'case':36} {'n':>2} {'median s':>9} {'min-max':>15} {'cpu s':>7} {'peak MiB':>9} {'output MB':>10}")
    for r in rows.values():
        print(f"{r['name']:36} {r['n']:2} {r['median_s']:9.2f} {r['min_s']:7.2f}-{r['max_s']:<7.2f} {r['cpu_s']:7.2f} "
              f"{r['peak_mib']:9.1f} {(r['size_bytes'] or 0) / 1e6:10.1f}")
    print()
    for p in results["pairs"]:
        print(f"{p['kiln']} / {p['peer']}: {p['ratio']:.3f}x" + (f" (target <= {p['target']}x)" if p["target"] else ""))
    print()
    for t in T:
        print(f"{'met    ' if t['met'] else 'NOT met'}  {t['target']}: {t['value']}")

    if docs:
        write_docs(docs, out, results, rows, meta, svgs, extra_md)


def machine(out, meta):
    lines = []
    keep = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "CPU max MHz", "L2 cache", "L3 cache",
            "Hypervisor vendor", "Virtualization type")
    for line in open(f"{out}/lscpu.txt") if os.path.exists(f"{out}/lscpu.txt") else []:
        k, _, v = line.partition(":")
        if k.strip() in keep:
            lines.append(f"{k.strip()}: {v.strip()}")
        if k.strip() == "Flags":
            flags = v.split()
            lines.append("SHA-NI: " + ("yes (sha_ni)" if "sha_ni" in flags else "no") + "; AVX2: " + ("yes" if "avx2" in flags else "no"))
    return lines


def md(text):
    """A markdown table cell: pipes escaped."""
    return str(text).replace("|", "\\|")


def write_docs(docs, out, results, rows, meta, svgs, extra_md=()):
    os.makedirs(f"{docs}/bench", exist_ok=True)
    for name, text in svgs.items():
        with open(f"{docs}/bench/{name}", "w") as f:
            f.write(text)
    for name in ("results.json", "results.csv", "runs.tsv", "meta.tsv", "failures.tsv", "profile.txt",
                 "sizes.tsv", "family.tsv", "transfer.tsv", "concurrency.tsv", "front.tsv"):
        if os.path.exists(f"{out}/{name}"):
            shutil.copy(f"{out}/{name}", f"{docs}/bench/{name}")
    m = meta
    corpus = m.get("corpus") if isinstance(m.get("corpus"), list) else ["?", "0", "0"]
    el = int(m.get("elapsed_s", 0) or 0)
    loads = sorted(r["load"] for rs in _RUNS.values() for r in rs)
    L = []
    a = L.append
    a("# Benchmarks")
    a("")
    a("Generated by `scripts/bench.sh` (do not edit by hand: rerun it). kiln against buildah, umoci, skopeo and")
    a("the hardware limits of the machine it ran on, measured in one run, each kiln case alternated with its peer.")
    a("")
    a(f"This run: {m.get('started', '?')}, kiln `{m.get('git', '?')}`, {m.get('runs', '?')} rounds"
      f"{' (quick mode: small inputs, not for quoting)' if m.get('quick') == '1' else ''}, sections: {m.get('only', 'all')}; "
      f"the whole harness took **{el // 60} min {el % 60} s**.")
    if MEASURED and m.get("only", "all") != "all":
        a("")
        a("Sections re-measured with `--keep` keep the others' results; where each section was measured "
          "(start of its run, kiln commit): "
          + "; ".join(f"{sec} {when}" for sec, when in MEASURED.items()) + ".")
    a("")
    a("## Method")
    a("")
    a("- One command on a fresh machine of this kind: `scripts/bench.sh` (`--quick` for a 1-round smoke run on small")
    a("  inputs, `--runs N`, `--only layer,ceiling,build,push,run,minimal,multiarch,scale,cache,family,transfer,front,concurrency`,")
    a("  `--keep` to re-measure some sections and keep the others', `--profile` for a `perf` profile of")
    a("  the default gzip layer). It installs the peers (Debian bookworm packages, `scripts/install-peers.sh`), builds")
    a("  kiln in release mode and makes its inputs with `scripts/make-corpus.sh`: a copy of the Rust toolchain's sysroot")
    a(f"  (this run's corpus: {int(corpus[1]) / 2**20:.0f} MiB, {corpus[2]} entries), subsets of it hard-linked (10 and 100 MiB), four real copies")
    a("  of it (4 GiB), synthetic trees of 1k, 10k and 100k small text-like files, and a Debian bookworm minbase from")
    a("  `debootstrap` (the tests' cache `/var/tmp/kiln-sandbox-bookworm` is reused when present).")
    a("- Every case runs as a whole process under GNU `time` (wall seconds, user + sys, peak RSS of the largest")
    a("  process). Rounds alternate kiln and its peer (A B A B …); a ratio is the **median of the per-round ratios**.")
    a("  Page cache warm: \"cold\" means an empty store or a new registry repository, not a cold disk.")
    a("- Layers: `kiln layer DIR --compression C --json` into an empty store, against `umoci insert` into a new")
    a("  image, and `tar -cf - | pigz -6 | tee | sha256sum` and `… | zstd -3 -T2 | …`, which hash the compressed")
    a("  blob only (kiln also hashes the tar for the diff_id).")
    a("- Ceilings: `openssl dgst -sha256` (SHA-NI) over kiln's own uncompressed layer blob, i.e. the exact tar bytes")
    a("  kiln hashes, against the CPU seconds of kiln's SHA-256 stage (`hash_cpu_seconds` of `kiln layer --compression")
    a("  none --json`; openssl's user seconds), paired per round; `gzip -6` and `zstd -3 -T1` on one core over a 256 MiB sample of the same")
    a("  tar (1 MiB of every 4), against kiln's compression busy time per thread; `tar -cf - | cat` for walk + read.")
    a("- Builds: `FROM scratch` + `COPY . /corpus/` of the corpus (hard-linked into a context directory), kiln vs")
    a("  `buildah bud --layers --storage-driver vfs`: cold (empty stores), warm (nothing changed) and after one file")
    a("  of the context was replaced. RUN and Dockerfile.minimal run rootless as an unprivileged user with")
    a("  subordinate ids: buildah with `--runtime runc` (crun fails on this cgroup-hybrid VM), vfs, `--no-cache")
    a("  --layers`; `--network none` for the RUN cases and `--network host` for Dockerfile.minimal, whose `apt-get`")
    a("  needs the Debian mirror (rootless slirp4netns cannot open /dev/net/tun here); kiln with `--no-cache`.")
    a("- Two platforms (`multiarch`): Dockerfile.minimal plus a small `FROM --platform=$BUILDPLATFORM` stage, built")
    a("  rootless for linux/amd64 and linux/arm64 in one command (`kiln build --platform` vs `buildah bud --platform")
    a("  --manifest`, vfs, runc, `--network host`), the arm64 RUN steps under the QEMU user emulator in binfmt_misc, on")
    a("  debootstrap bases for both (arm64 by `debootstrap --arch=arm64`, cached in `/var/tmp`) imported from the same")
    a("  tarballs into both stores; cache on, stores holding only the bases at the start of each round.")
    a("- Push: the corpus as a one-layer image to a `docker-registry` on 127.0.0.1 (plain HTTP), kiln push vs")
    a("  `skopeo copy` from an OCI layout; cold = new repository with kiln's blob-origin memory and skopeo's")
    a("  blob-info cache cleared (else both mount instead of uploading), warm = the repository has every blob.")
    a("- Scaling: `kiln layer` (default gzip) on each tree; time and RSS against tar bytes and entry count, with a")
    a("  least-squares line on log-log axes (exponent 1 = linear; fixed start-up cost pulls it below 1).")
    a("")
    a("## Machine")
    a("")
    for line in machine(out, m):
        a(f"- {line}")
    a(f"- Kernel {m.get('kernel', '?')}, {m.get('nproc', '?')} cores online, {m.get('mem', '?')} RAM")
    a(f"- Load average (1, 5, 15 min): **{m.get('load_start', '?')} at start**, {m.get('load_end', '?')} at the end; "
      f"1-min load at each measurement: median {med(loads) if loads else '?'}, max {max(loads) if loads else '?'}.")
    a("  The machine is shared with other build and test jobs, so absolute times are noisy; only the ratios of")
    a("  pairs taken in the same round mean anything.")
    vers = [f"{k[8:]} {v}" for k, v in m.items() if k.startswith("version_") and isinstance(v, str)]
    a(f"- Peers (Debian packages): {', '.join(vers)}")
    a("")
    a("## Targets")
    a("")
    a("| target | measured | | by how much |")
    a("|---|---|---|---|")
    for t in results["targets"]:
        a(f"| {md(t['target'])} | {md(t['value'])} | {'met' if t['met'] else '**not met**'} | {md(t.get('margin', ''))} |")
    a("")
    notes = f"{docs}/bench/NOTES.md"  # hand-written reading of the results; kept across runs
    if os.path.exists(notes):
        a(open(notes).read().rstrip())
        a("")
    a("## Ratios (kiln / peer, median of alternated pairs)")
    a("")
    a("| case | kiln s | peer s | ratio | target | per round | cpu-time ratio |")
    a("|---|---:|---:|---:|---:|---|---:|")
    for p in results["pairs"]:
        cr = f"{p['cpu_ratio']:.3f}×" if p.get("cpu_ratio") is not None else "–"
        a(f"| {md(p['label'])} | {fmt(p['kiln_s'])} | {fmt(p['peer_s'])} | {p['ratio']:.3f}× | "
          f"{('≤ ' + str(p['target']) + '×') if p['target'] else '–'} | {', '.join(f'{x:.3f}' for x in p['per_round'])} | {cr} |")
    if "sha256" in results:
        s = results["sha256"]
        cr = f"{s['cpu_ratio']:.3f}× (kiln hash CPU s / openssl user s: the target)" if s.get("cpu_ratio") is not None else "–"
        a(f"| {md(s['label'])} (kiln hash busy s / openssl wall s) | | | {s['ratio']:.3f}× | ≤ 1.05× | {', '.join(f'{x:.3f}' for x in s['per_round'])} | {cr} |")
    a("")
    a("Targets are on the wall-time ratio, except SHA-256 (CPU time, see the method). The cpu-time ratio (user + sys of each whole process tree, median of")
    a("per-round ratios) is less sensitive to the machine's load, but it is not what a user waits for.")
    a("")
    a("![ratios](bench/ratios.svg)")
    a("")
    a("## Every case")
    a("")
    a("| case | runs | median s | min–max s | cpu s | peak RSS MiB | output MB |")
    a("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows.values():
        if r["section"] in ("scale", "front"):  # front: its own table
            continue
        size = f"{r['size_bytes'] / 1e6:.1f}" if r["size_bytes"] else "–"
        a(f"| {md(r['name'])} | {r['n']} | {fmt(r['median_s'])} | {fmt(r['min_s'])}–{fmt(r['max_s'])} | {fmt(r['cpu_s'])} | "
          f"{r['peak_mib']:.1f} | {size} |")
    a("")
    a("Peak RSS is that of the largest single process (GNU time); for shell pipelines that is one stage of the pipe.")
    a("")
    if results["stages"]:
        a("## Throughput per stage against the ceiling")
        a("")
        a("| stage | kiln MB/s | ceiling MB/s | ceiling | kiln / ceiling | note |")
        a("|---|---:|---:|---|---:|---|")
        for s in results["stages"]:
            rel = f"{s['kiln'] / s['ceiling']:.2f}" if s["kiln"] and s["ceiling"] else "–"
            a(f"| {md(s['stage'])} | {fmt(s['kiln'])} | {fmt(s['ceiling'])} | {md(s['ceiling_name'])} | {rel} | {md(s['note'])} |")
        a("")
        a("![stages](bench/stages.svg)")
        a("")
    sc = results["scaling"]["points"]
    fits = results["scaling"]["fits"]
    if sc.get("bytes") or sc.get("files"):
        a("## Scaling")
        a("")
        a("| tree | files | tar MB | median s | MB/s | peak RSS MiB |")
        a("|---|---:|---:|---:|---:|---:|")
        for kind in ("bytes", "files"):
            for p in sc.get(kind, []):
                name = human_bytes(p["tree_bytes"]) + " (sysroot mix)" if kind == "bytes" else f"{human_count(p['files'])} small files"
                a(f"| {name} | {p['files']} | {p['tar_bytes'] / 1e6:.1f} | {fmt(p['median_s'])} | {fmt(p['mb_s'])} | {p['peak_mib']:.1f} |")
        a("")
        for kind in ("bytes", "files"):
            f = fits.get(kind, {})
            if f.get("time_exponent") is not None:
                wo = f.get("time_exponent_without_smallest")
                a(f"- Time against {kind}: log-log slope **{f['time_exponent']:.2f}**"
                  + (f" ({wo:.2f} without the smallest tree, where start-up dominates)" if wo is not None else "")
                  + (f"; peak RSS slope {f['rss_exponent']:.2f}." if f.get("rss_exponent") is not None else "."))
        a("")
        if sc.get("bytes"):
            a("![time and RSS against tree size](bench/scale-bytes.svg)")
            a("")
        if sc.get("files"):
            a("![time and RSS against file count](bench/scale-files.svg)")
            a("")
    L.extend(extra_md)
    fails = read_tsv(f"{out}/failures.tsv")
    if fails:
        a("## Failed runs (left out of the medians)")
        a("")
        a("| section | case | round | last line of its error output |")
        a("|---|---|---:|---|")
        for f in fails:
            a("| " + " | ".join(md(x) for x in (f + ["", "", "", ""])[:4]) + " |")
        a("")
    prof = f"{out}/profile.txt"
    if os.path.exists(prof) and os.path.getsize(prof):
        a("## Profile of the default gzip layer (`perf record -g`, self time, top symbols)")
        a("")
        a("```")
        a(open(prof).read().rstrip())
        a("```")
        a("")
    a("## Files")
    a("")
    a("`bench/results.json` (everything above, machine-readable), `bench/results.csv` (one row per case),")
    a("`bench/runs.tsv` (every run: section, case, round, wall s, peak KiB, user s, sys s, 1-min load),")
    a("`bench/meta.tsv` (machine, versions, loads, elapsed).")
    with open(f"{docs}/BENCHMARKS.md", "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"wrote {docs}/BENCHMARKS.md and {len(svgs)} plots in {docs}/bench/", file=sys.stderr)


if __name__ == "__main__":
    main()
