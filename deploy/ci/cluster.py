#!/usr/bin/env python3
"""HTTP checks for the containerised cluster test (.ci/deploy-test.sh).

Standard library only. Subcommands:

  wait-healthy URL...                  every region answers /healthz
  write --phase P --count N URL...     N writes to each region, acks recorded
  load --region R --phase P URL        writes until --stop-file exists
  verify URL...                        every acknowledged write readable everywhere
  converge URL...                      equal ops and per-keyspace digests everywhere
  isolated --phase P --region R URL... R's acknowledged writes absent from URLs
  latency SRC DST --min-ms MS          replication delay at least MS
  report                               totals over every acks file

Acknowledged writes are appended, one JSON object a line, to files in
--acks-dir (one file per writer), flushed as soon as the region answers: a
write counts as acknowledged only when the region answered 200 with a
version. Each key is written once, so its value must read back exactly.
"""

import argparse
import glob
import http.client
import json
import os
import sys
import time
import urllib.parse

KEYSPACE = "default"
PREFIX = "ci/"


def log(msg):
    print(f"cluster.py: {msg}", file=sys.stderr, flush=True)


class Region:
    """A region's client API over one kept-alive HTTP/1.1 connection."""

    def __init__(self, url, timeout=5.0):
        u = urllib.parse.urlsplit(url)
        self.url = url
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.timeout = timeout
        self.conn = None
        # TLS: trust only the cluster's CA (MERIDIAN_CA_FILE); tokens:
        # MERIDIAN_ACCESS_TOKEN, sent with every request.
        self.ctx = None
        if self.https:
            import ssl
            self.ctx = ssl.create_default_context(cafile=os.environ.get("MERIDIAN_CA_FILE"))
            # A container reached by its bridge IP (the cut-off region): the
            # certificate names services, not that IP. The chain is still
            # verified against the cluster's CA.
            import ipaddress
            try:
                if not ipaddress.ip_address(self.host).is_loopback:
                    self.ctx.check_hostname = False
            except ValueError:
                pass
        self.token = os.environ.get("MERIDIAN_ACCESS_TOKEN")

    def request(self, method, path, body=None):
        """(status, parsed JSON or None). Raises OSError/HTTPException on
        transport errors, after closing the connection."""
        if self.conn is None:
            if self.https:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self.ctx
                )
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return resp.status, parsed

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def put(self, key, value):
        return self.request("PUT", kv_path(key), value)

    def get(self, key):
        return self.request("GET", kv_path(key))

    def status(self):
        st, body = self.request("GET", "/v1/status")
        if st != 200:
            raise RuntimeError(f"{self.url}/v1/status answered {st}")
        return body

    def healthy(self):
        try:
            st, _ = self.request("GET", "/healthz")
            return st == 200
        except (OSError, http.client.HTTPException):
            return False

    def listing(self):
        """Every live key under PREFIX: {key: value}."""
        out = {}
        after = None
        while True:
            q = {"prefix": PREFIX, "limit": "1000"}
            if after is not None:
                q["after"] = after
            st, body = self.request("GET", f"/v1/kv/{KEYSPACE}?" + urllib.parse.urlencode(q))
            if st != 200:
                raise RuntimeError(f"{self.url} list answered {st}: {body}")
            for item in body["items"]:
                out[item["key"]] = item.get("value")
            after = body.get("next")
            if after is None:
                return out


def kv_path(key):
    return f"/v1/kv/{KEYSPACE}/" + urllib.parse.quote(key, safe="")


class Acks:
    """An append-only file of acknowledged writes."""

    def __init__(self, acks_dir, name):
        os.makedirs(acks_dir, exist_ok=True)
        self.f = open(os.path.join(acks_dir, name + ".jsonl"), "a", encoding="utf-8")

    def add(self, key, value, version):
        self.f.write(json.dumps({"key": key, "value": value, "version": version}) + "\n")
        self.f.flush()

    def close(self):
        self.f.close()


def read_acks(acks_dir):
    acked = {}
    for path in sorted(glob.glob(os.path.join(acks_dir, "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    a = json.loads(line)
                    acked[a["key"]] = a["value"]
    return acked


def write_one(region, acks, key, value):
    """True when acknowledged."""
    try:
        st, body = region.put(key, value)
    except (OSError, http.client.HTTPException):
        return False
    if st in (200, 201) and body and body.get("version"):
        acks.add(key, value, body["version"])
        return True
    return False


def cmd_wait_healthy(a):
    regions = [Region(u) for u in a.urls]
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        down = [r.url for r in regions if not r.healthy()]
        if not down:
            log(f"healthy: {' '.join(a.urls)}")
            return 0
        time.sleep(0.5)
    log(f"not healthy after {a.timeout}s: {' '.join(down)}")
    return 1


def cmd_write(a):
    total = 0
    for url in a.urls:
        region = Region(url)
        name = region_name(region)
        acks = Acks(a.acks_dir, f"{a.phase}-{name}")
        for n in range(a.count):
            key = f"{PREFIX}{a.phase}/{name}/{n:06d}"
            value = {"region": name, "phase": a.phase, "n": n}
            if not write_one(region, acks, key, value):
                log(f"write {key} to {url} was not acknowledged")
                return 1
            total += 1
        acks.close()
    log(f"{a.phase}: {total} writes acknowledged")
    return 0


def region_name(region):
    deadline = time.monotonic() + 30
    while True:
        try:
            return region.status()["region"]
        except (OSError, http.client.HTTPException, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def cmd_load(a):
    """Writes to one region until the stop file appears; keeps trying while
    the region is down (those attempts are not acknowledged)."""
    region = Region(a.url, timeout=3.0)
    acks = Acks(a.acks_dir, f"{a.phase}-{a.region}")
    n = ok = failed = 0
    while not os.path.exists(a.stop_file):
        key = f"{PREFIX}{a.phase}/{a.region}/{n:06d}"
        value = {"region": a.region, "phase": a.phase, "n": n}
        n += 1
        if write_one(region, acks, key, value):
            ok += 1
            if a.interval:
                time.sleep(a.interval)
        else:
            failed += 1
            time.sleep(0.2)
    acks.close()
    log(f"{a.phase}/{a.region}: {ok} acknowledged, {failed} not acknowledged (region down or cut off)")
    return 0


def cmd_verify(a):
    """Polls each region's listing until it holds every acknowledged write,
    then reads every one of them with GET in every region."""
    acked = read_acks(a.acks_dir)
    regions = [Region(u) for u in a.urls]
    deadline = time.monotonic() + a.timeout
    missing = {}
    while True:
        missing = {}
        for r in regions:
            try:
                have = r.listing()
            except (OSError, http.client.HTTPException, RuntimeError) as e:
                missing[r.url] = [f"unreachable: {e}"]
                continue
            m = [k for k, v in acked.items() if have.get(k) != v]
            if m:
                missing[r.url] = m
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if missing:
        for url, keys in missing.items():
            log(f"{url}: {len(keys)} acknowledged writes missing or wrong after {a.timeout}s, e.g. {keys[:5]}")
        print(f"verify: acknowledged={len(acked)} lost>0")
        return 1
    checked = 0
    bad = []
    for r in regions:
        for k, v in acked.items():
            try:
                st, body = r.get(k)
            except (http.client.RemoteDisconnected, ConnectionResetError):
                # A kept-alive connection the region closed as this read
                # went out (the listing above already held every write):
                # a read is safe to send again, on a new connection.
                st, body = r.get(k)
            checked += 1
            if st != 200 or body.get("value") != v:
                bad.append((r.url, k, st))
    if bad:
        log(f"{len(bad)} reads disagree, e.g. {bad[:5]}")
        print(f"verify: acknowledged={len(acked)} checked={checked} lost={len(bad)}")
        return 1
    print(f"verify: acknowledged={len(acked)} checked={checked} (GET in {len(regions)} regions) lost=0")
    return 0


def cmd_isolated(a):
    """The acknowledged writes of --phase/--region so far must be absent from
    every URL: proof that the cut is real."""
    acked = read_acks(a.acks_dir)
    prefix = f"{PREFIX}{a.phase}/{a.region}/"
    mine = {k for k in acked if k.startswith(prefix)}
    if not mine:
        log(f"no acknowledged writes under {prefix}: the cut-off region took no writes")
        return 1
    for url in a.urls:
        have = Region(url).listing()
        seen = mine & set(have)
        if seen:
            log(f"{url} already holds {len(seen)} of {len(mine)} writes made in {a.region} while it was cut off")
            return 1
    print(f"isolated: {len(mine)} writes acknowledged by {a.region} while cut off, none seen by {len(a.urls)} other regions")
    return 0


def cmd_latency(a):
    """Replication delay of single writes from one region to another."""
    src, dst = Region(a.src), Region(a.dst)
    delays = []
    for i in range(a.samples):
        key = f"{PREFIX}latency/{i:03d}-{time.time_ns()}"
        st, body = src.put(key, {"sample": i})
        if st not in (200, 201):
            log(f"write to {a.src} answered {st}: {body}")
            return 1
        t = time.monotonic()
        while True:
            st, _ = dst.get(key)
            if st == 200:
                break
            if time.monotonic() - t > 10:
                log(f"{key} did not reach {a.dst} in 10 s")
                return 1
            time.sleep(0.002)
        delays.append((time.monotonic() - t) * 1000)
    delays.sort()
    median = delays[len(delays) // 2]
    print(f"latency: {a.src} -> {a.dst} replication delay min {delays[0]:.0f} ms, median {median:.0f} ms over {len(delays)} writes")
    if delays[0] < a.min_ms:
        log(f"a write replicated in {delays[0]:.0f} ms, under the link's {a.min_ms} ms: the link emulator is not in the path")
        return 1
    return 0


def summary(st):
    digests = {k["name"]: k["digest"] for k in st["keyspaces"]}
    return st["ops"], digests


def cmd_converge(a):
    regions = [Region(u) for u in a.urls]
    deadline = time.monotonic() + a.timeout
    last = None
    while True:
        try:
            views = [summary(r.status()) for r in regions]
            last = views
            if all(v == views[0] for v in views):
                print(f"converge: {len(regions)} regions at ops={views[0][0]} with equal digests {views[0][1]}")
                return 0
        except (OSError, http.client.HTTPException, RuntimeError) as e:
            last = str(e)
        if time.monotonic() > deadline:
            log(f"no convergence after {a.timeout}s: {last}")
            for r in regions:
                try:
                    st = r.status()
                    log(f"{r.url}: ops={st['ops']} peers={json.dumps(st['peers'])}")
                except Exception as e:  # noqa: BLE001 (diagnostics only)
                    log(f"{r.url}: {e}")
            return 1
        time.sleep(0.5)


def cmd_report(a):
    per_phase = {}
    for path in sorted(glob.glob(os.path.join(a.acks_dir, "*.jsonl"))):
        phase = os.path.basename(path).split("-", 1)[0]
        with open(path, encoding="utf-8") as f:
            per_phase[phase] = per_phase.get(phase, 0) + sum(1 for line in f if line.strip())
    print(" ".join(f"{p}={n}" for p, n in per_phase.items()))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("wait-healthy")
    s.add_argument("urls", nargs="+")
    s.add_argument("--timeout", type=float, default=90)
    s.set_defaults(fn=cmd_wait_healthy)

    s = sub.add_parser("write")
    s.add_argument("urls", nargs="+")
    s.add_argument("--phase", required=True)
    s.add_argument("--count", type=int, default=20)
    s.add_argument("--acks-dir", required=True)
    s.set_defaults(fn=cmd_write)

    s = sub.add_parser("load")
    s.add_argument("url")
    s.add_argument("--region", required=True)
    s.add_argument("--phase", required=True)
    s.add_argument("--acks-dir", required=True)
    s.add_argument("--stop-file", required=True)
    s.add_argument("--interval", type=float, default=0.005)
    s.set_defaults(fn=cmd_load)

    s = sub.add_parser("verify")
    s.add_argument("urls", nargs="+")
    s.add_argument("--acks-dir", required=True)
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("converge")
    s.add_argument("urls", nargs="+")
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_converge)

    s = sub.add_parser("isolated")
    s.add_argument("urls", nargs="+")
    s.add_argument("--acks-dir", required=True)
    s.add_argument("--phase", required=True)
    s.add_argument("--region", required=True)
    s.set_defaults(fn=cmd_isolated)

    s = sub.add_parser("latency")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--samples", type=int, default=5)
    s.add_argument("--min-ms", type=float, required=True)
    s.set_defaults(fn=cmd_latency)

    s = sub.add_parser("report")
    s.add_argument("--acks-dir", required=True)
    s.set_defaults(fn=cmd_report)

    a = p.parse_args()
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
