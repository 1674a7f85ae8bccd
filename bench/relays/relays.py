#!/usr/bin/python3
"""bench/relays: matrixd sending through several relays (smtp.relays)
next to one relay with as many connections, in the same run.

Every relay is Postfix's smtp-sink on 127.0.0.1 (a free port; it throws
every message away), tls = "off", no AUTH, the ledger on. The seed issue
(15 articles) goes to SUBSCRIBERS subscribers; the issue is published and
queued once with the relay down, and every timed `matrixd --once` starts
from a copy of that ledger and only sends. The layouts alternate, run
after run, so that they share the machine's background load:

    1x8   one relay, 8 connections (smtp.url)
    2x4   two relays of 4 connections each (smtp.relays)
    3x4   (with --layouts) three relays of 4 connections

    relays.py [--runs 3] [--subscribers 667] [--layouts 1x8,2x4] [--json FILE]

The figures: msg/s (messages / wall time of the whole --once), the ratio
of each layout to 1x8 (median of the back-to-back ratios), matrixd's CPU
per message, and what that rate makes in an hour: messages, and
subscribers who each get the 15 articles.
"""
import argparse
import json
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "send"))
import send  # noqa: E402  (bench/send's helpers: Sink, Instance, publish …)

ARTICLES = send.ARTICLES


class RelaysInstance(send.Instance):
    def write_relays(self, ports, connections):
        if len(ports) == 1:
            self.write_conf(f"smtp://127.0.0.1:{ports[0]}", connections)
            return
        relays = ", ".join(f'{{ url = "smtp://127.0.0.1:{p}"; connections = {connections}; }}'
                           for p in ports)
        self.write_conf_smtp(f"relays = ( {relays} );")


def parse_layout(s):
    n, c = s.split("x")
    return int(n), int(c)


def run_layout(inst, pristine, sinks, n, layout):
    k, conns = parse_layout(layout)
    use = sinks[:k]
    inst.restore(pristine)
    inst.write_relays([s.port for s in use], conns)
    before = [s.messages() for s in use]
    rc, wall, cpu, rss = inst.once()
    got = [s.messages() - b for s, b in zip(use, before)]
    sent = inst.counts().get("sent", 0)
    if rc != 0 or sent != n or sum(got) != n:
        send.die(f"{layout}: exit {rc}, {sent} sent in the ledger, {sum(got)} at the sinks "
                 f"({got}), expected exit 0 and {n}", inst.log)
    return {"wall": wall, "rate": n / wall, "cpu_us": cpu / n * 1e6, "per_sink": got,
            "rss_kib": rss}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=667)
    ap.add_argument("--layouts", default="1x8,2x4")
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()
    layouts = args.layouts.split(",")
    if layouts[0] != "1x8":
        layouts.insert(0, "1x8")  # the reference
    send.tool("smtp-sink")

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    work = send.WORK = Path(tempfile.mkdtemp(prefix="matrixd-bench-relays."))
    res = {"machine": send.versions(), "subscribers": args.subscribers,
           "load_before": send.loadavg(),
           "runs": {l: [] for l in layouts}}
    try:
        inst = RelaysInstance(work / "inst")
        n, _, _, _ = send.publish(inst, args.subscribers)
        pristine = work / "pristine"
        inst.snapshot(pristine)
        nsinks = max(parse_layout(l)[0] for l in layouts)
        sinks = [send.Sink(work, f"sink{i}") for i in range(nsinks)]
        res["messages"] = n
        for r in range(args.runs):
            for l in layouts:
                print(f"run {r + 1}/{args.runs} {l} …", file=sys.stderr)
                res["runs"][l].append(run_layout(inst, pristine, sinks, n, l))
    except KeyboardInterrupt:
        print("bench/relays: interrupted", file=sys.stderr)
        return 130
    finally:
        send.clean_up(work)
    res["load_after"] = send.loadavg()

    m = res["machine"]
    print(f"bench/relays — {m}" if isinstance(m, str) else f"bench/relays — {m}")
    print(f"load average before/after: {res['load_before']} / {res['load_after']}")
    print(f"{res['messages']:,} messages ({args.subscribers:,} subscribers × {ARTICLES} "
          "articles) to smtp-sink relays; ledger on, tls off; median of "
          f"{args.runs} runs each, alternating")
    print("  layout  msg/s  ratio to 1x8  CPU µs/msg  messages/hour  subscribers/hour  "
          "per sink (last run)")
    ref = res["runs"]["1x8"]
    for l in layouts:
        runs = res["runs"][l]
        rate = statistics.median(x["rate"] for x in runs)
        ratio = statistics.median(x["rate"] / y["rate"] for x, y in zip(runs, ref))
        cpu = statistics.median(x["cpu_us"] for x in runs)
        res.setdefault("summary", {})[l] = {"rate": rate, "ratio": ratio, "cpu_us": cpu}
        print(f"  {l:>6} {rate:6,.0f}  {ratio:12.2f}  {cpu:10.0f}  {rate * 3600:13,.0f}  "
              f"{rate * 3600 / ARTICLES:16,.0f}  {runs[-1]['per_sink']}")
    for l in layouts:
        print(f"  {l} runs, msg/s: " + " ".join(f"{x['rate']:.0f}" for x in res["runs"][l]))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
