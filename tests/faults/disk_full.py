#!/usr/bin/env python3
"""Full disk: every onboardctl write on a data directory whose file system is (nearly) full.

Mounts a small tmpfs (needs root and permission to mount; otherwise prints SKIP and exits 77, which
ctest reports as skipped), puts the data directory on it and, for each write operation (device
register, batch register, bundle create, cert renew, device revoke, token create, crl), fills the
file system up to SLACK free bytes and runs the operation, for SLACK from 0 up in steps of --step
KiB until the operation succeeds (so every way it can fail for lack of room is met). With too
little room the operation must fail with a clear error (a non-zero exit code and a message that says
the disk is full or names the file it could not write), and nothing may be half-written: the
registry's invariants hold (tests/faults/kill_faults.py), no temporary file is left beside the data,
and once the space is freed `audit verify` passes and a rerun of the operation completes. With
enough room it succeeds. Prints, per operation and SLACK, whether it failed and with what message.

Usage: disk_full.py --onboardctl PATH [--step KIB] [--size-mib N] [--ops LIST]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kill_faults import Batch, Bundle, Harness, Register, Renew, Revoke, Violation  # noqa: E402

SKIP = 77
# A batch's rows commit one by one: a small batch is enough to meet a full disk between two rows,
# and keeps the room a whole batch needs (where the sweep ends) small.
Batch.size = 3
CLEAR = ("disk is full", "no space left on device")


class Token:
    def __init__(self, h, name):
        self.h, self.name, self.rest = h, name, False

    def prepare(self):
        return {"token": self.h.new_name("tok")}

    def cli(self, ctx, rerun=False):
        return ["token", "create", "--name", ctx["token"], "--role", "reader"]

    def rerun(self, ctx):
        if not self.h.count("SELECT count(*) FROM api_tokens WHERE name = ?", ctx["token"]):
            self.h.run(*self.cli(ctx))
        if not self.h.count("SELECT count(*) FROM audit_events WHERE action = 'token.create' AND subject = ?",
                            ctx["token"]):
            raise Violation(f"rerun of token: {ctx['token']} has no audit row")


class Crl:
    def __init__(self, h, name):
        self.h, self.name, self.rest = h, name, False

    def prepare(self):
        return {"number": self.h.count("SELECT crl_number FROM meta")}

    def cli(self, ctx, rerun=False):
        return ["crl"]

    def rerun(self, ctx):
        self.h.run(*self.cli(ctx))


def fill(mount, slack):
    """Fills the file system at `mount` until SLACK bytes are free (as near as its pages allow)."""
    path = os.path.join(mount, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            try:
                while os.write(fd, chunk) > 0:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    size = os.path.getsize(path)
    os.truncate(path, max(0, size - slack))


def unfill(mount):
    path = os.path.join(mount, "filler")
    if os.path.exists(path):
        os.unlink(path)


def summary(runs):
    """Markdown rows, one per stretch of room in which an operation failed the same way."""
    rows = []
    for name, kib, code, message in runs:
        # The same failure names another batch or device each run.
        same = re.sub(r"(batch|ren|rev|tok)-\d+", r"\1-N", message)
        if rows and rows[-1][0] == name and rows[-1][3] == code and rows[-1][4] == same:
            rows[-1][2] = kib
        else:
            rows.append([name, kib, kib, code, same])
    return [f"| {name} | {lo}{'' if lo == hi else f' to {hi}'} | {code} | {same[:220]} |"
            for name, lo, hi, code, same in rows]


def data_files(h):
    """Every file under the data directory but SQLite's own -wal and -shm."""
    found = set()
    for root, _, files in os.walk(h.data):
        for f in files:
            if not f.endswith(("-wal", "-shm")):
                found.add(os.path.relpath(os.path.join(root, f), h.data))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onboardctl", required=True)
    ap.add_argument("--step", type=int, default=8, help="KiB more room at each run")
    ap.add_argument("--max-kib", type=int, default=1024, help="give up (fail) past this much room")
    ap.add_argument("--size-mib", type=int, default=8)
    ap.add_argument("--ops", default="register,batch,bundle,renew,revoke,token,crl")
    ap.add_argument("--markdown", help="also write the table as Markdown to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: disk_full needs root to mount a tmpfs (CI runs as root)")
        return SKIP
    base = tempfile.mkdtemp(prefix="onboard-diskfull-")
    mount = os.path.join(base, "mnt")
    os.mkdir(mount)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size_mib}m,mode=0700", "tmpfs", mount],
                       capture_output=True, text=True)
    if p.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        print(f"SKIP: cannot mount a tmpfs here (no permission in this container?): {p.stderr.strip()}")
        return SKIP
    ok = False
    try:
        h = Harness(os.path.abspath(args.onboardctl), mount)
        h.init()
        kinds = {"register": Register, "batch": Batch, "bundle": Bundle, "renew": Renew, "revoke": Revoke,
                 "token": Token, "crl": Crl}
        print(f"disk_full: a {args.size_mib} MiB tmpfs at {mount}; batches of {Batch.size} devices")
        table = ["| Operation | Free KiB | Exit | Message |", "|---|---:|---:|---|"]
        print("\n".join(table))
        runs = []  # (operation, free KiB, exit code, message) for the Markdown summary
        for name in args.ops.split(","):
            op = kinds[name](h, name)
            slack = 0
            while True:
                ctx = op.prepare()
                files_before = data_files(h)
                fill(mount, slack)
                where = f"{name} with {slack // 1024} KiB free"
                try:
                    run = h.run(*op.cli(ctx), check=False)
                    message = (run.stderr.strip().splitlines() or [""])[-1]
                    # The work directory's random name would make every report differ.
                    row = f"| {name} | {slack // 1024} | {run.returncode} | {message[:200].replace(base, '…')} |"
                    runs.append((name, slack // 1024, run.returncode, message.replace(base, "…")))
                    print(row, flush=True)
                    if run.returncode != 0 and not any(c in message.lower() for c in CLEAR):
                        raise Violation(f"{where}: the error does not say the disk is full: {run.stderr}")
                    # Nothing half-written: no stray temporary file beside the data, even before
                    # the space is freed. New files are what the operation writes when it works.
                    stray = [f for f in data_files(h) - files_before if os.path.basename(f).startswith(".")]
                    if stray:
                        raise Violation(f"{where}: temporary files left behind: {stray}")
                    # A failed bundle leaves no zip and no password file (a zip whose password
                    # nobody saw, or a password file without its zip).
                    if run.returncode != 0 and isinstance(op, Bundle):
                        left = [p for p in (ctx["out"], ctx["pw"]) if os.path.exists(p)]
                        if left:
                            raise Violation(f"{where}: a failed bundle left {left}")
                finally:
                    unfill(mount)
                h.check_invariants(where)  # with audit verify, once the room is back
                op.rerun(ctx)
                # The chain is verified again after the last rerun of each operation (below).
                h.check_invariants(where + ", after the rerun", verify_audit=False)
                h.check_crl(where + ", after the rerun")
                if run.returncode == 0:
                    h.check_invariants(where + ", after the rerun")
                    if slack == 0:
                        raise Violation(f"{name} succeeded on a full disk: the test did not fill it")
                    break
                slack += args.step * 1024
                if slack > args.max_kib * 1024:
                    raise Violation(f"{name} still fails with {args.max_kib} KiB free")
        print("disk_full: every write failed cleanly on a full disk and completed once there was room")
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write("\n".join(table + summary(runs)) + "\n")
        ok = True
    except Violation as v:
        print(f"disk_full: FAILED: {v}", file=sys.stderr)
    finally:
        subprocess.run(["umount", mount], check=False)
        if ok:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"disk_full: kept {base} (unmounted)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
