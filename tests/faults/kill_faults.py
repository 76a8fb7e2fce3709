#!/usr/bin/env python3
"""Fault injection: SIGKILL onboardctl (and onboardctl serve) in the middle of its writes.

Loops N times: starts one write operation, kills it with SIGKILL after a random delay spread over
the operation's measured duration, checks the registry's invariants, reruns the operation and checks
that the rerun completes and the invariants hold again. The operations are the CLI's `device
register`, `batch register --csv` (BATCH_SIZE devices), `bundle create`, `cert renew` and `device
revoke`, and the same through `onboardctl serve` (POST /v1/devices, /v1/batches, /v1/bundles,
/v1/devices/ID/certificates, /v1/devices/ID/revoke); there the server is killed while it answers.

Invariants (SQL over the SQLite registry, plus `onboardctl audit verify`):
  - no certificate without its device row; no device without a certificate; every device that is
    not revoked has exactly one active certificate
  - no serial number twice
  - the audit chain verifies; the number of audit rows never decreases; every committed change has
    its audit row (each certificate its device.register or certificate.add row naming its serial,
    each revoked device its device.revoke row, each batch and bundle its create row)
  - no held key left for a certificate whose bundle was recorded, of a revoked device, or of a
    certificate that is no longer active
  - after the rerun: the CRL on disk lists every revoked certificate
Prints, per operation, how many kills landed in which phase (nothing written yet / part written /
everything written but the command not finished / after the command had finished) and exits 1 on
the first violated invariant, naming it.

Usage: kill_faults.py --onboardctl PATH [--kills N] [--seed S] [--ops LIST] [--markdown FILE]
"""
import argparse
import collections
import csv
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HOLD_PASSPHRASE = "fault-injection hold passphrase 7f3a"
BATCH_SIZE = 50
BUNDLE_DEVICES = 5
CLI_OPS = ["register", "batch", "bundle", "renew", "revoke"]
REST_OPS = ["rest_" + op for op in CLI_OPS]


class Violation(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Harness:
    def __init__(self, onboardctl, work):
        self.ctl = onboardctl
        self.work = work
        self.data = os.path.join(work, "data")
        self.db = os.path.join(self.data, "registry.db")
        self.env = dict(os.environ, ONBOARD_FAULTS_HOLD=HOLD_PASSPHRASE)
        self.env.pop("ONBOARD_REGISTRY", None)
        self.env.pop("ONBOARD_DATA_DIR", None)
        self.audit_rows = 0
        self.counter = 0
        self.server = None
        self.port = None
        self.token = None

    # ---- processes ---------------------------------------------------------------------------
    def argv(self, *args):
        return [self.ctl, "--data-dir", self.data, *args]

    def run(self, *args, check=True):
        p = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise Violation(f"'onboardctl {' '.join(args)}' failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def start(self, *args):
        return subprocess.Popen(self.argv(*args), env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def new_name(self, prefix):
        self.counter += 1
        return f"{prefix}-{self.counter:05d}"

    def init(self):
        self.run("init", "--no-group", "--key-alg", "p256")
        self.token = self.run("token", "create", "--name", "faults", "--role", "operator").stdout.strip()
        self.audit_rows = self.count("SELECT count(*) FROM audit_events")

    # ---- the REST server ---------------------------------------------------------------------
    def start_server(self):
        self.port = free_port()
        self.server = self.start("serve", "--listen", f"127.0.0.1:{self.port}", "--threads", "2",
                                 "--max-body", "1048576", "--hold-passphrase-env", "ONBOARD_FAULTS_HOLD")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise Violation(f"onboardctl serve exited at start: {self.server.stderr.read()}")
            try:
                status, _ = self.request("GET", "/healthz", None, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise Violation("onboardctl serve did not answer /healthz within 20 s")

    def stop_server(self, sig=signal.SIGTERM):
        if self.server is None:
            return
        if self.server.poll() is None:
            self.server.send_signal(sig)
        try:
            self.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.server.stderr.close()
        self.server = None

    def request(self, method, path, body, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Authorization": "Bearer " + self.token}
            data = None
            if body is not None:
                data = json.dumps(body)
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    # ---- the registry ------------------------------------------------------------------------
    def query(self, sql, *params):
        # Read-only, through SQLite itself: the same view the broker and onboardctl get.
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def count(self, sql, *params):
        return self.query(sql, *params)[0][0]

    def snapshot(self):
        """What the phase classification compares: a few counts over the registry."""
        return {
            "devices": self.count("SELECT count(*) FROM devices"),
            "certificates": self.count("SELECT count(*) FROM certificates"),
            "revoked": self.count("SELECT count(*) FROM devices WHERE status = 'revoked'"),
            "bundles": self.count("SELECT count(*) FROM bundles"),
            "audit": self.count("SELECT count(*) FROM audit_events"),
            "crl": self.count("SELECT crl_number FROM meta"),
        }

    def check_invariants(self, where, verify_audit=True):
        def none(sql, what):
            rows = self.query(sql)
            if rows:
                raise Violation(f"{where}: {what}: {rows[:5]}")

        none("SELECT c.serial_hex, c.device_id FROM certificates c LEFT JOIN devices d ON d.id = c.device_id"
             " WHERE c.device_id IS NOT NULL AND d.id IS NULL", "certificate without its device row")
        none("SELECT d.id FROM devices d WHERE NOT EXISTS"
             " (SELECT 1 FROM certificates c WHERE c.device_id = d.id)", "device without a certificate")
        none("SELECT d.id, (SELECT count(*) FROM certificates c WHERE c.device_id = d.id AND c.status = 'active')"
             " AS n FROM devices d WHERE d.status <> 'revoked' AND n <> 1",
             "device not revoked without exactly one active certificate")
        none("SELECT d.id FROM devices d JOIN certificates c ON c.device_id = d.id"
             " WHERE d.status = 'revoked' AND c.status = 'active'", "revoked device with an active certificate")
        none("SELECT serial_hex, count(*) FROM certificates GROUP BY serial_hex HAVING count(*) > 1",
             "duplicate serial")
        # Every committed change has its audit row.
        none("SELECT c.serial_hex FROM certificates c WHERE c.device_id IS NOT NULL AND NOT EXISTS"
             " (SELECT 1 FROM audit_events a WHERE a.action IN ('device.register', 'certificate.add')"
             "  AND a.subject = c.device_id AND json_extract(a.details, '$.serial') = c.serial_hex)",
             "certificate without its audit row")
        none("SELECT d.id FROM devices d WHERE d.status = 'revoked' AND NOT EXISTS"
             " (SELECT 1 FROM audit_events a WHERE a.action = 'device.revoke' AND a.subject = d.id)",
             "revoked device without its audit row")
        none("SELECT b.id FROM batches b WHERE NOT EXISTS"
             " (SELECT 1 FROM audit_events a WHERE a.action = 'batch.create' AND a.subject = b.id)",
             "batch without its audit row")
        none("SELECT b.id FROM bundles b WHERE NOT EXISTS"
             " (SELECT 1 FROM audit_events a WHERE a.action = 'bundle.create' AND a.subject = b.id)",
             "bundle without its audit row")
        # Held keys: wiped once bundled, never kept for a revoked device or an inactive certificate.
        none("SELECT h.device_id FROM held_keys h JOIN bundle_devices bd ON bd.device_id = h.device_id"
             " AND bd.certificate_sha256 = h.certificate_sha256", "held key left after its bundle was recorded")
        none("SELECT h.device_id FROM held_keys h JOIN devices d ON d.id = h.device_id WHERE d.status = 'revoked'",
             "held key of a revoked device")
        none("SELECT h.device_id FROM held_keys h JOIN certificates c ON c.sha256_fingerprint = h.certificate_sha256"
             " WHERE c.status <> 'active'", "held key of a certificate that is not active")
        rows = self.count("SELECT count(*) FROM audit_events")
        if rows < self.audit_rows:
            raise Violation(f"{where}: audit rows went down from {self.audit_rows} to {rows}")
        self.audit_rows = rows
        if not verify_audit:
            return
        p = self.run("audit", "verify", check=False)
        if p.returncode != 0:
            raise Violation(f"{where}: audit verify failed ({p.returncode}): {p.stdout} {p.stderr}")

    def check_crl(self, where):
        """Every revoked certificate (of the issuing CA) is on the CRL on disk."""
        crl = os.path.join(self.data, "crl.pem")
        p = subprocess.run(["openssl", "crl", "-in", crl, "-noout", "-text"], capture_output=True, text=True)
        if p.returncode != 0:
            raise Violation(f"{where}: the CRL {crl} is unreadable: {p.stderr.strip()}")
        listed = set()
        for line in p.stdout.splitlines():
            line = line.strip()
            if line.startswith("Serial Number:"):
                listed.add(line.split(":", 1)[1].strip().upper().lstrip("0"))
        missing = [s for (s,) in self.query("SELECT serial_hex FROM certificates WHERE status = 'revoked'")
                   if s.upper().lstrip("0") not in listed]
        if missing:
            raise Violation(f"{where}: revoked certificates missing from the CRL on disk: {missing[:5]}")

    # ---- preparing what an operation needs -------------------------------------------------
    def register_held(self, device):
        self.run("device", "register", device, "--hold-key", "--key-alg", "p256",
                 "--hold-passphrase-env", "ONBOARD_FAULTS_HOLD")

    def batch_of(self, n, prefix):
        """Writes a CSV of n new devices; returns (batch id, csv path, device ids)."""
        batch = self.new_name("batch")
        ids = [f"{batch}-{prefix}{i:03d}" for i in range(n)]
        path = os.path.join(self.work, batch + ".csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "name", "type"])
            for d in ids:
                w.writerow([d, "device " + d, "sensor"])
        return batch, path, ids


# ---- operations --------------------------------------------------------------------------------
# Each operation has prepare() (unkilled set-up; returns a context), command(ctx) (the CLI argv or
# the REST request), phase(ctx, before, after) (where the kill landed, from the registry) and
# rerun_ok(ctx) (the rerun's end state).


class Op:
    def __init__(self, h, name):
        self.h = h
        self.name = name
        self.rest = name.startswith("rest_")


class Register(Op):
    def prepare(self):
        return {"device": self.h.new_name("reg")}

    def cli(self, ctx, rerun=False):
        return ["device", "register", ctx["device"], "--hold-key", "--key-alg", "p256",
                "--hold-passphrase-env", "ONBOARD_FAULTS_HOLD"]

    def http(self, ctx, rerun=False):
        return "POST", "/v1/devices", {"id": ctx["device"], "key_alg": "p256"}

    def phase(self, ctx, before, after):
        return "committed" if after["devices"] > before["devices"] else "nothing written"

    def rerun(self, ctx):
        if self.h.count("SELECT count(*) FROM devices WHERE id = ?", ctx["device"]):
            return  # a rerun would only say "already exists"
        run_op(self, ctx)
        if not self.h.count("SELECT count(*) FROM devices WHERE id = ?", ctx["device"]):
            raise Violation(f"rerun of {self.name}: device {ctx['device']} is not registered")


class Batch(Op):
    size = BATCH_SIZE

    def prepare(self):
        batch, path, ids = self.h.batch_of(self.size, "b")
        return {"batch": batch, "csv": path, "ids": ids}

    def cli(self, ctx, rerun=False):
        argv = ["batch", "register", "--csv", ctx["csv"], "--batch", ctx["batch"], "--key-alg", "p256",
                "--hold-passphrase-env", "ONBOARD_FAULTS_HOLD"]
        return argv + (["--skip-existing"] if rerun else [])

    def http(self, ctx, rerun=False):
        body = {"batch": ctx["batch"], "key_alg": "p256",
                "devices": [{"id": d, "name": "device " + d, "type": "sensor"} for d in ctx["ids"]]}
        if rerun:
            body["skip_existing"] = True
        return "POST", "/v1/batches", body

    def phase(self, ctx, before, after):
        n = after["devices"] - before["devices"]
        if n == 0:
            return "nothing written"
        return "all rows committed" if n == len(ctx["ids"]) else "some rows committed"

    def rerun(self, ctx):
        run_op(self, ctx, rerun=True)
        got = self.h.count("SELECT count(*) FROM batch_devices WHERE batch_id = ?", ctx["batch"])
        if got != len(ctx["ids"]):
            raise Violation(f"rerun of {self.name}: batch {ctx['batch']} has {got} of {len(ctx['ids'])} devices")


class Bundle(Op):
    def prepare(self):
        batch, path, ids = self.h.batch_of(BUNDLE_DEVICES, "k")
        self.h.run("batch", "register", "--csv", path, "--batch", batch, "--key-alg", "p256",
                   "--hold-passphrase-env", "ONBOARD_FAULTS_HOLD")
        return {"batch": batch, "ids": ids, "out": os.path.join(self.h.work, batch + ".zip"),
                "pw": os.path.join(self.h.work, batch + ".pw")}

    def cli(self, ctx, rerun=False):
        for path in (ctx["pw"],):  # --password-out makes a new file
            if os.path.exists(path):
                os.unlink(path)
        return ["bundle", "create", "--batch", ctx["batch"], "--out", ctx["out"], "--password-out", ctx["pw"],
                "--hold-passphrase-env", "ONBOARD_FAULTS_HOLD", "--force"]

    def http(self, ctx, rerun=False):
        return "POST", "/v1/bundles", {"batch": ctx["batch"]}

    def phase(self, ctx, before, after):
        if after["bundles"] > before["bundles"]:
            return "committed"
        if not self.rest and os.path.exists(ctx["out"]):
            return "zip written, not recorded"
        return "nothing written"

    def rerun(self, ctx):
        recorded = self.h.count("SELECT count(*) FROM bundles WHERE batch_id = ?", ctx["batch"])
        if not recorded:
            run_op(self, ctx, rerun=True)
        left = self.h.count("SELECT count(*) FROM held_keys h JOIN batch_devices b ON b.device_id = h.device_id"
                            " WHERE b.batch_id = ?", ctx["batch"])
        if not self.h.count("SELECT count(*) FROM bundles WHERE batch_id = ?", ctx["batch"]) or left:
            raise Violation(f"rerun of {self.name}: batch {ctx['batch']} not bundled ({left} held keys left)")


class Renew(Op):
    def prepare(self):
        device = self.h.new_name("ren")
        self.h.register_held(device)
        return {"device": device}

    def cli(self, ctx, rerun=False):
        return ["cert", "renew", ctx["device"], "--hold-key", "--key-alg", "p256",
                "--hold-passphrase-env", "ONBOARD_FAULTS_HOLD"]

    def http(self, ctx, rerun=False):
        return "POST", f"/v1/devices/{ctx['device']}/certificates", {"key_alg": "p256"}

    def phase(self, ctx, before, after):
        if after["certificates"] == before["certificates"]:
            return "nothing written"
        return "committed, CRL rewritten" if after["crl"] > before["crl"] else "committed, CRL not yet"

    def rerun(self, ctx):
        before = self.h.count("SELECT count(*) FROM certificates WHERE device_id = ?", ctx["device"])
        run_op(self, ctx, rerun=True)
        after = self.h.count("SELECT count(*) FROM certificates WHERE device_id = ?", ctx["device"])
        if after != before + 1:
            raise Violation(f"rerun of {self.name}: no new certificate for {ctx['device']}")


class Revoke(Op):
    def prepare(self):
        device = self.h.new_name("rev")
        self.h.register_held(device)
        return {"device": device}

    def cli(self, ctx, rerun=False):
        return ["device", "revoke", ctx["device"], "--reason", "keyCompromise"]

    def http(self, ctx, rerun=False):
        return "POST", f"/v1/devices/{ctx['device']}/revoke", {"reason": "keyCompromise"}

    def phase(self, ctx, before, after):
        if after["revoked"] == before["revoked"]:
            return "nothing written"
        return "committed, CRL rewritten" if after["crl"] > before["crl"] else "committed, CRL not yet"

    def rerun(self, ctx):
        run_op(self, ctx, rerun=True)
        if self.h.count("SELECT count(*) FROM devices WHERE id = ? AND status = 'revoked'", ctx["device"]) != 1:
            raise Violation(f"rerun of {self.name}: {ctx['device']} is not revoked")


OPS = {"register": Register, "batch": Batch, "bundle": Bundle, "renew": Renew, "revoke": Revoke}


def run_op(op, ctx, rerun=False):
    """Runs an operation to completion (unkilled); fails on an error answer."""
    h = op.h
    if op.rest:
        method, path, body = op.http(ctx, rerun)
        status, answer = h.request(method, path, body)
        if status >= 300:
            raise Violation(f"{op.name}: {method} {path} answered {status}: {answer[:300]!r}")
    else:
        argv = op.cli(ctx, rerun)
        h.run(*argv)


def temporary_files(data):
    """The temporary files of atomic writes (.NAME.XXXXXX, core/files.cpp) under `data`."""
    found = set()
    for root, _, files in os.walk(data):
        found |= {os.path.join(root, f) for f in files if f.startswith(".")}
    return found


def killed_run(op, ctx, delay):
    """Starts the operation, SIGKILLs the process doing it after `delay` seconds. Returns whether
    the process had finished before the kill."""
    h = op.h
    if not op.rest:
        proc = h.start(*op.cli(ctx))
        try:
            proc.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            finished = False
        proc.stderr.close()
        return finished
    method, path, body = op.http(ctx)
    answered = threading.Event()

    def send():
        try:
            h.request(method, path, body, timeout=60)
            answered.set()
        except (OSError, http.client.HTTPException):
            pass  # the server died under the request: expected

    t = threading.Thread(target=send)
    t.start()
    finished = answered.wait(timeout=delay)
    h.server.send_signal(signal.SIGKILL)
    t.join()
    h.stop_server()
    return finished


def measure(op):
    """Seconds one unkilled run takes (of the process, or of the request)."""
    ctx = op.prepare()
    t0 = time.monotonic()
    run_op(op, ctx)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onboardctl", required=True)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--ops", default=",".join(CLI_OPS + REST_OPS))
    ap.add_argument("--markdown", help="also write the table as Markdown to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    names = [n for n in args.ops.split(",") if n]
    for n in names:
        if n.removeprefix("rest_") not in OPS:
            ap.error(f"unknown operation {n}")
    work = tempfile.mkdtemp(prefix="onboard-faults-")
    h = Harness(os.path.abspath(args.onboardctl), work)
    print(f"kill_faults: seed {seed}, {args.kills} kills over {', '.join(names)}; work dir {work}", flush=True)
    ok = False
    try:
        h.init()
        ops = {}
        durations = {}
        for n in names:
            op = OPS[n.removeprefix("rest_")](h, n)
            ops[n] = op
            if op.rest:
                h.start_server()
            durations[n] = measure(op)
            if op.rest:
                h.stop_server()
            print(f"  {n}: one unkilled run takes {durations[n] * 1000:.0f} ms", flush=True)
        h.check_invariants("after the measuring runs")
        phases = collections.defaultdict(collections.Counter)
        left_behind = collections.Counter()  # temporary files of atomic writes a kill cut short
        seen_leftovers = temporary_files(h.data)
        for i in range(args.kills):
            n = names[i % len(names)]
            op = ops[n]
            if op.rest:
                h.start_server()
            ctx = op.prepare()
            before = h.snapshot()
            # Spread over the operation's duration and past its end: a run under a kill may take
            # longer than the measured one (a REST request's first connection, a busy machine).
            delay = rng.uniform(0, durations[n] * 1.5)
            finished = killed_run(op, ctx, delay)
            after = h.snapshot()
            where = f"kill {i + 1} ({n} after {delay * 1000:.0f} ms)"
            phase = "finished before the kill" if finished else op.phase(ctx, before, after)
            phases[n][phase] += 1
            leftovers = temporary_files(h.data) - seen_leftovers
            if leftovers:
                left_behind[n] += len(leftovers)
                seen_leftovers |= leftovers
            h.check_invariants(where)
            if op.rest:
                h.start_server()
            op.rerun(ctx)
            if op.rest:
                h.stop_server()
            h.check_invariants(where + ", after the rerun")
            h.check_crl(where + ", after the rerun")
        print(f"kill_faults: {args.kills} kills, every invariant held and every rerun completed")
        lines = ["| Operation | One run (ms) | Kills | Where the kills landed | Temporary files left |",
                 "|---|---:|---:|---|---:|"]
        for n in names:
            landed = "; ".join(f"{k}: {v}" for k, v in sorted(phases[n].items()))
            lines.append(f"| {n} | {durations[n] * 1000:.0f} | {sum(phases[n].values())} | {landed} |"
                         f" {left_behind[n]} |")
        print("\n".join(lines))
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write("\n".join(lines) + "\n")
        ok = True
    except Violation as v:
        print(f"kill_faults: FAILED (seed {seed}): {v}", file=sys.stderr)
    finally:
        h.stop_server()
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok:
            print(f"kill_faults: the registry is kept in {work}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
