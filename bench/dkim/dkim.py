#!/usr/bin/python3
"""bench/dkim: what signing costs, and what a message costs unsigned.

All against Postfix's smtp-sink on 127.0.0.1 (a free port), with the
ledger on, tls = "off", smtp.connections = 4 (bench/send has the set-up):

1. the seed issue to SUBSCRIBERS subscribers, sent by `matrixd --once`
   without DKIM, with one RSA-2048 key, with an RSA-2048 and an Ed25519
   key (both made by `matrixctl dkim-keygen`); messages per second and CPU
   per message (user + system, all threads);
2. next to them, in the same run: `openssl speed rsa2048` (one core: the
   physical limit of RSA signing here) and Postfix's `smtp-source -d -s 4`
   sending as many messages of the same mean size to the same sink.

Targets: signed with both keys, msg/s >= 0.7 x OpenSSL's one-core
RSA-2048 signs/s; unsigned, matrixd's CPU per message <= 2 x smtp-source's.

    dkim.py [--runs 3] [--subscribers 334] [--json FILE]
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("send", HERE.parent / "send" / "send.py")
send = importlib.util.module_from_spec(spec)
spec.loader.exec_module(send)

CONNS = 4
TARGET_SIGN = 0.7
TARGET_CPU = 2.0


def openssl_rsa2048():
    """RSA-2048 signs per second on one core (openssl speed is single-threaded)."""
    p = subprocess.run(["openssl", "speed", "-seconds", "3", "rsa2048"], capture_output=True,
                       text=True)
    m = re.search(r"^rsa 2048 bits\s+\S+s\s+\S+s\s+([\d.]+)", p.stdout, re.M)
    if p.returncode != 0 or not m:
        send.die(f"openssl speed rsa2048 failed: {p.stderr.strip()[-200:]}")
    return float(m.group(1))


def run_matrixd(inst, pristine, sink, n, dkim):
    inst.restore(pristine)
    inst.write_conf(f"smtp://127.0.0.1:{sink.port}", CONNS)
    with open(inst.conf, "a") as f:
        f.write(dkim)
    m0, c0 = sink.messages(), sink.cpu()
    rc, wall, cpu, _ = inst.once()
    got, sink_cpu = sink.messages() - m0, sink.cpu() - c0
    sent = inst.counts().get("sent", 0)
    if rc != 0 or sent != n or got != n:
        send.die(f"matrixd --once: exit {rc}, {sent} sent, {got} at the sink, expected {n}",
                 inst.log)
    return {"rate": n / wall, "cpu_us": cpu / n * 1e6, "sink_cpu_us": sink_cpu / n * 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=334)
    ap.add_argument("--json")
    args = ap.parse_args()
    send.tool("smtp-sink"), send.tool("smtp-source")
    if shutil.which("openssl") is None:
        send.die("openssl missing: run `sh scripts/deps.sh bench` as root")
    work = send.WORK = Path(tempfile.mkdtemp(prefix="matrixd-bench-dkim."))
    res = {"machine": send.versions(),
           "load_before": send.loadavg()}
    try:
        inst = send.Instance(work / "i")
        n, *_ = send.publish(inst, args.subscribers)
        pristine = work / "pristine"
        inst.snapshot(pristine)
        size = round(statistics.mean(send.message_sizes(inst, "reader1@example.org")))
        keys = {}
        for sel, typ in (("rsa2026", "rsa"), ("ed2026", "ed25519")):
            keys[sel] = work / f"{sel}.pem"
            inst.ctl("dkim-keygen", "--selector", sel, "--type", typ, "--out", keys[sel])
        line = lambda *sels: "dkim = { keys = ( " + ", ".join(
            f'{{ selector = "{s}"; key_file = "{keys[s]}"; }}' for s in sels) + " ); };\n"
        configs = [("unsigned", ""), ("RSA-2048", line("rsa2026")),
                   ("RSA-2048 + Ed25519", line("rsa2026", "ed2026"))]
        sink = send.Sink(work, "sink")
        out = {name: [] for name, _ in configs}
        out["smtp-source"], out["openssl"] = [], []
        try:
            for i in range(args.runs):
                for name, dk in configs:
                    out[name].append(run_matrixd(inst, pristine, sink, n, dk))
                out["smtp-source"].append(send.send_source(sink, n, CONNS, size, work))
                out["openssl"].append(openssl_rsa2048())
                print(f"  run {i + 1}: " + ", ".join(
                    f"{k} {v[-1]['rate']:.0f} msg/s" for k, v in out.items() if k != "openssl")
                      + f", openssl {out['openssl'][-1]:.0f} signs/s", file=sys.stderr)
        finally:
            sink.stop()
        res.update({"messages": n, "mean_size": size, "connections": CONNS, "runs": out})
    except KeyboardInterrupt:
        return 130
    finally:
        send.clean_up(work)
    res["load_after"] = send.loadavg()
    ok = report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0 if ok else 1


def report(res):
    r = res["runs"]
    med = lambda k, f: statistics.median(x[f] for x in r[k])
    ossl = statistics.median(r["openssl"])
    print()
    print(f"bench/dkim — {res['machine']}")
    print(f"load average before/after: {res['load_before']} / {res['load_after']}")
    print(f"{res['messages']:,} messages (the seed issue, mean {res['mean_size'] / 1000:.1f} KB) "
          f"to smtp-sink, {res['connections']} connections; median of {len(r['openssl'])} runs")
    print("   what                       msg/s   CPU µs/msg   sink µs/msg")
    for k in ("unsigned", "RSA-2048", "RSA-2048 + Ed25519", "smtp-source"):
        print(f"   {k:24s} {med(k, 'rate'):8,.0f}   {med(k, 'cpu_us'):10,.0f}   "
              f"{med(k, 'sink_cpu_us'):11,.0f}")
    print(f"   openssl speed rsa2048: {ossl:,.0f} signs/s on one core")
    # What the machine's cores could carry if matrixd and the sink had them
    # to themselves: a figure other load disturbs less than msg/s (CPU
    # time still stretches under contention, but nobody else's work counts).
    cores = os.cpu_count() or 1
    cap = lambda k: cores * 1e6 / (med(k, "cpu_us") + med(k, "sink_cpu_us"))
    print(f"   CPU-bound capacity of {cores} cores (matrixd + sink CPU per message): "
          + ", ".join(f"{k} {cap(k):,.0f} msg/s" for k in ("unsigned", "RSA-2048",
                                                          "RSA-2048 + Ed25519"))
          + f"; both keys = {cap('RSA-2048 + Ed25519') / ossl:.2f} x OpenSSL")
    # ratios per run (each run's figures share its background load)
    sign = statistics.median(a["rate"] / o for a, o in zip(r["RSA-2048 + Ed25519"], r["openssl"]))
    cpu = statistics.median(a["cpu_us"] / b["cpu_us"] for a, b in zip(r["unsigned"],
                                                                       r["smtp-source"]))
    ok1, ok2 = sign >= TARGET_SIGN, cpu <= TARGET_CPU
    print(f"   signed with both keys: {sign:.2f} x OpenSSL's one-core RSA-2048 signs/s "
          f"(target >= {TARGET_SIGN}): {'met' if ok1 else 'MISSED'}")
    print(f"   unsigned CPU per message: {cpu:.2f} x smtp-source's (target <= {TARGET_CPU}): "
          f"{'met' if ok2 else 'MISSED'}")
    return ok1 and ok2


if __name__ == "__main__":
    sys.exit(main())
