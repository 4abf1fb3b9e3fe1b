#!/usr/bin/env python3
"""pkgcache.py PORT DIR - a pull-through package cache on 127.0.0.1:PORT for the family benchmark.

GET /HOST/PATH serves DIR/HOST/PATH when it is there; otherwise it fetches http://HOST/PATH once,
stores it (atomically) and serves it. The URL form is apt-cacher-ng's
(`deb http://127.0.0.1:PORT/deb.debian.org/debian bookworm main`), so a base image's sources.list
names the cache without any apt option. Anything put under DIR beforehand (the PyPI simple index
under DIR/pypi/) is served as is and never fetched. Once the cache is filled every request is
answered from disk: no network in the measured builds. Python standard library only.

(Debian's apt-cacher-ng 3.7.4 was the first choice; on the benchmark VM it cannot open its
listening socket: "Error resolving address for binding".)
"""
import http.server
import os
import shutil
import sys
import threading
import urllib.request

PORT, ROOT = int(sys.argv[1]), os.path.abspath(sys.argv[2])
LOCK = threading.Lock()
STATS = {"hit": 0, "miss": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: apt pipelines its requests on one connection

    def log_message(self, *args):
        pass

    def _path(self):
        rel = os.path.normpath(self.path.split("?", 1)[0].lstrip("/"))
        if rel.startswith("..") or rel in (".", ""):
            return None, None
        if rel.endswith("/") or os.path.isdir(os.path.join(ROOT, rel)):
            rel = os.path.join(rel, "index.html")
        return rel, os.path.join(ROOT, rel)

    def _fetch(self, rel, dest):
        host, _, path = rel.partition("/")
        if "." not in host:  # a local tree (pypi/): never fetched
            return False
        try:
            with urllib.request.urlopen(f"http://{host}/{path}", timeout=60) as r:
                tmp = f"{dest}.{threading.get_ident()}.tmp"
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f, 1 << 20)
                os.replace(tmp, dest)
            return True
        except OSError:
            return False

    def _serve(self, body):
        rel, dest = self._path()
        if rel is None:
            return self._error(400)
        if not os.path.isfile(dest):
            with LOCK:
                STATS["miss"] += 1
            if not self._fetch(rel, dest):
                return self._error(404)
        else:
            with LOCK:
                STATS["hit"] += 1
        size = os.path.getsize(dest)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "text/html" if dest.endswith(".html") else "application/octet-stream")
        self.end_headers()
        if body:
            with open(dest, "rb") as f:
                shutil.copyfileobj(f, self.wfile, 1 << 20)

    def _error(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self._serve(True)

    def do_HEAD(self):
        self._serve(False)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


if __name__ == "__main__":
    srv = Server(("127.0.0.1", PORT), Handler)
    try:
        srv.serve_forever()
    finally:
        print(f"hits {STATS['hit']} misses {STATS['miss']}", file=sys.stderr)
