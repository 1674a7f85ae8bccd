#!/usr/bin/python3
"""bench/send: matrixd's delivery engine against Postfix's smtp-sink.

Three measurements, each against smtp-sink on 127.0.0.1 (a free port; the
sink throws every message away, nothing touches the disk), with the ledger
on (it always is), tls = "off" and no AUTH:

1. throughput: the seed issue (15 articles) to SUBSCRIBERS subscribers, one
   personalised message per (article, subscriber), sent by `matrixd --once`
   with smtp.connections = N, next to Postfix's `smtp-source -d -s N`
   (connection reuse, like ours) sending the same number of messages of the
   same mean size to the same sink, alternately in the same run. The issue
   is published and queued first by a --once run with the relay down; the
   timed run starts from a copy of that ledger and only sends.
2. slow relay: smtp-sink -W .:1 (one second before it answers the final
   dot), 16 connections, 16 subscribers x 15 articles = 240 messages.
3. memory: 10k, 50k, 100k subscribers (1.5 M deliveries queued at 100k);
   matrixd --once sends to the fast sink for MEM_SECONDS and gets SIGTERM;
   its peak RSS (GNU time's %M: the kernel's high-water mark) at 4 and 16
   connections, with the same mix of articles in flight at every size.

    send.py [--runs 3] [--subscribers 1334] [--only throughput,slow,memory]
            [--mem-sizes 10000,50000,100000] [--mem-seconds 20] [--json FILE]

Environment: MATRIXD_BUILD (default ROOT/build) picks the binaries, so two
builds can be compared on the same machine. Everything runs in one temp
directory, removed at the end with every server this script started.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MATRIXD_BUILD", ROOT / "build"))
MATRIXD = BUILD / "matrixd"
MATRIXCTL = BUILD / "matrixctl"
SEED = ROOT / "examples" / "issues" / "matrix-060.txt"
TEMPLATES = ROOT / "templates"
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None  # Debian package time
ARTICLES = 15  # the seed issue's
TARGET_RATIO = 0.7
TARGET_SLOW = 12.0
TARGET_RSS_MB = 64.0

children = []  # every process we started that may still run
WORK = None  # the temp directory


def die(msg, log=None):
    """Fails the benchmark; the temp directory goes, so show the log's end."""
    print(f"bench/send: {msg}", file=sys.stderr)
    if log and Path(log).exists():
        tail = Path(log).read_text(errors="replace").splitlines()[-20:]
        print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
    sys.exit(1)


def tool(name):
    p = shutil.which(name, path=SBIN + ":" + os.environ.get("PATH", ""))
    if p is None:
        die(f"{name} not found: install Postfix's tools with `sh scripts/deps.sh bench` as root")
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, what):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"{what} exited at start (status {proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(512)  # the greeting; then QUIT so the sink counts a clean session
                s.sendall(b"QUIT\r\n")
                return
        except OSError:
            time.sleep(0.05)
    die(f"{what} does not listen on 127.0.0.1:{port}")


def stop(proc):
    """SIGTERM to one process we started (and to the program GNU time runs
    for us), SIGKILL if it lingers."""
    if proc.poll() is None:
        for k in kids(proc.pid) if getattr(proc, "rssfile", None) else []:
            try:
                os.kill(k, signal.SIGTERM)
            except ProcessLookupError:
                pass
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in children:
        children.remove(proc)


def clean_up(work):
    """Stops every process we started and removes the work directory."""
    for p in list(children):
        stop(p)
    shutil.rmtree(work, ignore_errors=True)


def loadavg():
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    return " ".join(open("/proc/loadavg").read().split()[:3])


def proc_cpu(pid):
    """user + system seconds of a live process (all threads)."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class Sink:
    """smtp-sink on a free loopback port; -c keeps a running message count."""

    def __init__(self, work, name, extra=()):
        self.port = free_port()
        self.out = work / f"{name}.out"
        args = [tool("smtp-sink"), "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
        args += [*extra, f"127.0.0.1:{self.port}", "1024"]
        self.f = open(self.out, "wb")
        self.proc = subprocess.Popen(args, stdout=self.f, stderr=subprocess.STDOUT)
        children.append(self.proc)
        wait_listening(self.port, self.proc, "smtp-sink")

    def messages(self):
        self.f.flush()
        m = re.findall(rb"mesg=(\d+)", self.out.read_bytes()[-4096:])
        return int(m[-1]) if m else 0

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def stop(self):
        stop(self.proc)
        self.f.close()


def kids(pid):
    """The children of a process (GNU time's: the program it runs)."""
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def spawn(args, stdout=None, stderr=None, rss=False):
    """Starts args; with rss, under GNU time writing the peak RSS to a file.
    Why not wait4's ru_maxrss: Python starts children with vfork, and the
    kernel charges the parent's high-water RSS to the child at exec, so a
    /bin/true started from a 70 MB Python reports 70 MB (/usr/bin/time
    forks from a 1 MB process)."""
    rssfile = None
    if rss and TIME:
        fd, rssfile = tempfile.mkstemp(prefix="rss.", dir=WORK)
        os.close(fd)
        args = [TIME, "-f", "%M", "-o", rssfile, *args]
    p = subprocess.Popen(args, stdout=stdout or subprocess.DEVNULL,
                         stderr=stderr or subprocess.DEVNULL)
    p.rssfile = rssfile
    children.append(p)
    return p


def reap(p, status):
    """Exit code and peak RSS (KiB, None when unknown) of a spawned process."""
    p.returncode = os.waitstatus_to_exitcode(status)
    children.remove(p)
    rss = None
    if p.rssfile:
        lines = Path(p.rssfile).read_text().split()
        os.unlink(p.rssfile)
        rss = int(lines[-1]) if lines and lines[-1].isdigit() else None
    return p.returncode, rss


def run_timed(args, stdout=None, stderr=None, rss=False):
    """Runs args; returns (exit code, wall s, user+sys s, peak RSS KiB or None)."""
    t0 = time.monotonic()
    p = spawn(args, stdout, stderr, rss)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    rc, peak = reap(p, status)
    return rc, wall, ru.ru_utime + ru.ru_stime, peak


class Instance:
    """One matrixd installation in a directory: config, state, issues."""

    def __init__(self, dir):
        self.dir = dir
        for d in ("issues", "state", "public"):
            (dir / d).mkdir(parents=True, exist_ok=True)
        self.conf = dir / "matrixd.conf"
        self.db = dir / "state" / "matrixd.db"
        self.log = dir / "matrixd.log"

    def write_conf(self, url, connections):
        self.write_conf_smtp(f'url = "{url}";\n  connections = {connections};')

    def write_conf_smtp(self, relay):
        """The configuration, with relay (the smtp members that say where
        mail goes: url and connections, or relays) in its smtp group."""
        self.conf.write_text(f"""\
issue_dir = "{self.dir}/issues";
state_dir = "{self.dir}/state";
public_dir = "{self.dir}/public";
template_dir = "{TEMPLATES}";
issue_settle_seconds = 0;
site = {{
  base_url = "https://news.example.org/matrix/";
  from = "Matrix 矩阵 <matrix@example.org>";
}};
smtp = {{
  {relay}
  tls = "off";
  return_path = "bounces+{{token}}@example.org";
}};
http = {{ listen = ""; }};
""")

    def ctl(self, *args):
        p = subprocess.run([str(MATRIXCTL), "-c", str(self.conf), *map(str, args)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            die(f"matrixctl {' '.join(map(str, args))}: {p.stderr.strip()}")
        return p.stdout

    def matrixd_args(self):
        return [str(MATRIXD), "-c", str(self.conf), "--once"]

    def once(self):
        with open(self.log, "ab") as log:
            return run_timed(self.matrixd_args(), stderr=log, rss=True)

    def counts(self):
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as c:
            return dict(c.execute("SELECT state, count(*) FROM deliveries GROUP BY state"))

    def snapshot(self, dest):
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(self.dir / "state", dest)

    def restore(self, src):
        shutil.rmtree(self.dir / "state")
        shutil.copytree(src, self.dir / "state")


def write_subscribers(path, n):
    """n confirmed article-mode subscribers, one in three with a Chinese
    name (an RFC 2047 To: header), like a real list."""
    latin = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi"]
    chinese = ["王伟", "李娜", "张敏", "刘洋", "陈静", "杨磊"]
    with open(path, "w", encoding="utf-8") as f:
        f.write("email,name,mode\n")
        for i in range(n):
            name = chinese[i % 6] if i % 3 == 0 else f"{latin[i % 8]} {chr(65 + i % 26)}."
            f.write(f"reader{i}@example.org,{name},article\n")


def publish(inst, subscribers):
    """Imports the subscribers and publishes the seed issue with the relay
    down (a closed port): every delivery queued, nothing sent. Returns
    (deliveries, publish wall s, publish peak RSS KiB, import wall s)."""
    csv = inst.dir / "subscribers.csv"
    write_subscribers(csv, subscribers)
    inst.write_conf(f"smtp://127.0.0.1:{free_port()}", 4)
    t0 = time.monotonic()
    inst.ctl("import", csv)
    t_import = time.monotonic() - t0
    csv.unlink()
    shutil.copy(SEED, inst.dir / "issues" / SEED.name)
    rc, wall, _, rss = inst.once()
    if rc != 75:
        die(f"publishing with the relay down: matrixd --once exited {rc}, expected 75",
            inst.log)
    # The relay-down run deferred the few deliveries it tried (without
    # counting an attempt); put them back, due like the rest, so that every
    # timed run starts from the same all-queued ledger.
    with sqlite3.connect(inst.db) as c:
        c.execute("UPDATE deliveries SET state = 'queued', attempts = 0, next_attempt = "
                  "created_at, last_code = NULL, last_status = NULL, last_reply = NULL "
                  "WHERE state <> 'queued'")
    with sqlite3.connect(inst.db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n = inst.counts().get("queued", 0)
    if n != subscribers * ARTICLES:
        die(f"{n} deliveries queued, expected {subscribers * ARTICLES}")
    return n, wall, rss, t_import


def message_sizes(inst, email):
    """The sizes of the messages one subscriber gets (matrixctl render builds
    them with the same code as the daemon)."""
    out = inst.dir / "render"
    inst.ctl("render", inst.dir / "issues" / SEED.name, "--out", out, "--to", email)
    sizes = [p.stat().st_size for p in sorted((out / "mail").glob("*.eml"))]
    shutil.rmtree(out)
    if len(sizes) != ARTICLES:
        die(f"render made {len(sizes)} messages, expected {ARTICLES}")
    return sizes


def send_matrixd(inst, pristine, sink, n, conns):
    inst.restore(pristine)
    inst.write_conf(f"smtp://127.0.0.1:{sink.port}", conns)
    m0, c0 = sink.messages(), sink.cpu()
    rc, wall, cpu, rss = inst.once()
    got, sink_cpu = sink.messages() - m0, sink.cpu() - c0
    sent = inst.counts().get("sent", 0)
    if rc != 0 or sent != n or got != n:
        die(f"matrixd --once (connections={conns}): exit {rc}, {sent} sent in the ledger, "
            f"{got} at the sink, expected exit 0 and {n}", inst.log)
    return {"wall": wall, "rate": n / wall, "cpu_us": cpu / n * 1e6,
            "sink_cpu_us": sink_cpu / n * 1e6, "rss_kib": rss}


def send_source(sink, n, conns, size, work):
    m0, c0 = sink.messages(), sink.cpu()
    with open(work / "smtp-source.err", "ab") as err:
        rc, wall, cpu, _ = run_timed(
            [tool("smtp-source"), "-d", "-s", str(conns), "-m", str(n), "-l", str(size),
             "-M", "example.org", "-f", "bench@example.org", "-t", "reader@example.org",
             f"127.0.0.1:{sink.port}"], stderr=err)
    got, sink_cpu = sink.messages() - m0, sink.cpu() - c0
    if rc != 0 or got != n:
        die(f"smtp-source -s {conns}: exit {rc}, {got} messages at the sink, expected {n}",
            work / "smtp-source.err")
    return {"wall": wall, "rate": n / wall, "cpu_us": cpu / n * 1e6,
            "sink_cpu_us": sink_cpu / n * 1e6}


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def throughput(work, args, res):
    inst = Instance(work / "throughput")
    n, pub_wall, _, _ = publish(inst, args.subscribers)
    pristine = work / "throughput-pristine"
    inst.snapshot(pristine)
    sizes = message_sizes(inst, "reader1@example.org")
    size = round(statistics.mean(sizes))
    res["messages"] = {"count": n, "mean": size, "min": min(sizes), "max": max(sizes),
                       "publish_s": pub_wall}
    sink = Sink(work, "sink")
    try:
        for conns in args.connections:
            md, src = [], []
            for i in range(args.runs):
                # alternate who goes first: neither always gets the warmer machine
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for who in order:
                    if who == 0:
                        md.append(send_matrixd(inst, pristine, sink, n, conns))
                    else:
                        src.append(send_source(sink, n, conns, size, work))
                print(f"  N={conns:<2} run {i + 1}: matrixd {md[-1]['rate']:6.0f} msg/s, "
                      f"smtp-source {src[-1]['rate']:6.0f} msg/s", file=sys.stderr)
            res.setdefault("throughput", []).append({"connections": conns, "matrixd": md,
                                                     "smtp_source": src})
        # what a --once run costs when there is nothing to send: start-up,
        # the issue directory scan, the ledger queries, exit
        rc, wall, _, _ = inst.once()
        res["messages"]["idle_once_s"] = wall
    finally:
        sink.stop()


def slow(work, args, res):
    subs = 16
    inst = Instance(work / "slow")
    n, _, _, _ = publish(inst, subs)
    pristine = work / "slow-pristine"
    inst.snapshot(pristine)
    size = res.get("messages", {}).get("mean") or round(statistics.mean(
        message_sizes(inst, "reader1@example.org")))
    sink = Sink(work, "slow-sink", ["-W", ".:1"])
    try:
        md = []
        for i in range(args.runs):
            md.append(send_matrixd(inst, pristine, sink, n, 16))
            print(f"  slow run {i + 1}: matrixd {md[-1]['rate']:.1f} msg/s", file=sys.stderr)
        src = [send_source(sink, n, 16, size, work)]
        res["slow"] = {"messages": n, "connections": 16, "matrixd": md, "smtp_source": src}
    finally:
        sink.stop()


def memory(work, args, res):
    sink = Sink(work, "mem-sink")
    out = []
    try:
        for subs in args.mem_sizes:
            inst = Instance(work / f"mem-{subs}")
            t0 = time.monotonic()
            n, pub_wall, pub_rss, t_import = publish(inst, subs)
            # The ledger sends article by article; in its seconds a 100k list
            # would only reach the two smallest articles (8–17 KB) while a
            # 10k list sends all of them, up to 112 KB: not the same load.
            # Spread each article over 15 slices of due times (all already
            # due) so that every size sends the whole mix from the start.
            with sqlite3.connect(inst.db) as c:
                c.execute("UPDATE deliveries SET next_attempt = created_at - (id * 7) % 15")
            with sqlite3.connect(inst.db) as c:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pristine = work / f"mem-{subs}-pristine"
            inst.snapshot(pristine)
            row = {"subscribers": subs, "queued": n, "import_s": t_import,
                   "publish_s": pub_wall, "publish_rss_kib": pub_rss, "runs": []}
            for conns in args.connections:
                inst.restore(pristine)
                inst.write_conf(f"smtp://127.0.0.1:{sink.port}", conns)
                row["runs"].append(mem_run(inst, conns, args.mem_seconds))
                r = row["runs"][-1]
                print(f"  {subs} subscribers, N={conns}: peak RSS {r['rss_kib'] / 1024:.1f} MB "
                      f"(reached at {r['peak_at_s']:.1f} s), {r['sent']} sent in "
                      f"{args.mem_seconds:.0f} s", file=sys.stderr)
            out.append(row)
            shutil.rmtree(inst.dir)
            shutil.rmtree(pristine)
            print(f"  ({subs} subscribers: {time.monotonic() - t0:.0f} s)", file=sys.stderr)
    finally:
        sink.stop()
    res["memory"] = out


def mem_run(inst, conns, seconds):
    """matrixd --once sending to the sink for `seconds`, then SIGTERM. RSS
    and VmHWM sampled every 100 ms from /proc; the peak from GNU time (the
    kernel's figure over the whole run, exit included), else the last
    VmHWM sampled."""
    with open(inst.log, "ab") as log:
        p = spawn(inst.matrixd_args(), stderr=log, rss=True)
    t0 = time.monotonic()
    samples = []
    termed = 0.0
    md = None if TIME else p.pid
    while True:
        pid, status, _ = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        t = time.monotonic() - t0
        if md is None:
            md = (kids(p.pid) or [None])[0]
        try:
            st = open(f"/proc/{md}/status").read() if md else ""
            rss, hwm = (re.search(rf"{k}:\s+(\d+)", st) for k in ("VmRSS", "VmHWM"))
            if rss and hwm:
                samples.append((t, int(rss.group(1)), int(hwm.group(1))))
        except OSError:
            pass
        if t >= seconds and not termed and md:
            os.kill(md, signal.SIGTERM)
            termed = t
        time.sleep(0.1)
    elapsed = termed or time.monotonic() - t0
    rc, peak = reap(p, status)
    if rc not in (0, 75):
        die(f"matrixd exited {rc} after SIGTERM", inst.log)
    sent = inst.counts().get("sent", 0)
    if sent == 0:
        die(f"matrixd sent nothing in {seconds} s", inst.log)
    if peak is None:
        peak = max((hwm for _, _, hwm in samples), default=0)
    # when the high-water mark was reached (past the last sample: at exit)
    peak_at = next((t for t, _, hwm in samples if hwm >= peak), elapsed)
    return {"connections": conns, "rss_kib": peak, "sent": sent,
            "rate": sent / elapsed, "peak_at_s": peak_at,
            "rss_first_half_max_kib": max((kb for t, kb, _ in samples if t < seconds / 2),
                                          default=0),
            "rss_second_half_max_kib": max((kb for t, kb, _ in samples if t >= seconds / 2),
                                           default=0)}


def mb(kib):
    return kib / 1024 if kib is not None else float("nan")


def pair_ratio(t):
    """Median of matrixd/smtp-source over runs made back to back: each pair
    shares the machine's state, so other load on it cancels out best."""
    return statistics.median(a["rate"] / b["rate"]
                             for a, b in zip(t["matrixd"], t["smtp_source"]))


def report(res, args):
    ok = True
    lines = []
    w = lines.append
    verdict = lambda good: "met" if good else "MISSED"
    busy = float(res["load_before"].split()[0]) > 0.5 * (os.cpu_count() or 1)
    w("")
    w(f"bench/send — {res['machine']}")
    w(f"load average before/after: {res['load_before']} / {res['load_after']}" +
      ("  (a busy machine: rates below an idle one's, ratios noisier)" if busy else ""))
    m = res.get("messages")
    if "throughput" in res:
        w("")
        w(f"1. throughput: {m['count']:,} messages ({args.subscribers:,} subscribers × {ARTICLES} "
          f"articles, {m['min'] / 1000:.1f}–{m['max'] / 1000:.1f} KB, "
          f"mean {m['mean'] / 1000:.1f} KB = smtp-source -l {m['mean']}) to smtp-sink; "
          "ledger on, tls off")
        w(f"   publish + queue (--once, relay down): {m['publish_s']:.2f} s, not timed below; "
          f"a --once with nothing to send: {m.get('idle_once_s', 0):.2f} s, included below")
        w("     N  matrixd msg/s  smtp-source msg/s  ratio  ≥ 0.70  "
          "CPU µs/msg: matrixd  smtp-source  sink (md/src)  matrixd peak RSS")
        for t in res["throughput"]:
            a, b = median(t["matrixd"], "rate"), median(t["smtp_source"], "rate")
            ratio = pair_ratio(t)
            good = ratio >= TARGET_RATIO
            ok &= good
            rss = max((r["rss_kib"] or 0) for r in t["matrixd"]) or None
            w(f"  {t['connections']:4d}  {a:13,.0f}  {b:17,.0f}  {ratio:5.2f}  {verdict(good):6s}  "
              f"{median(t['matrixd'], 'cpu_us'):19.0f}  "
              f"{median(t['smtp_source'], 'cpu_us'):11.0f}  "
              f"{median(t['matrixd'], 'sink_cpu_us'):7.0f}/"
              f"{median(t['smtp_source'], 'sink_cpu_us'):<5.0f}"
              f"  {mb(rss):13.1f} MB")
        w(f"   median of {args.runs} runs each, alternating; ratio = median of the ratios of "
          "back-to-back runs. Runs, msg/s:")
        for t in res["throughput"]:
            w(f"     N={t['connections']}: matrixd " +
              " ".join(f"{r['rate']:.0f}" for r in t["matrixd"]) + "; smtp-source " +
              " ".join(f"{r['rate']:.0f}" for r in t["smtp_source"]))
    if "slow" in res:
        s = res["slow"]
        a = median(s["matrixd"], "rate")
        good = a >= TARGET_SLOW
        ok &= good
        w("")
        w(f"2. slow relay: smtp-sink -W .:1 (1 s before each reply to the final dot), "
          f"{s['connections']} connections, {s['messages']} messages")
        w(f"   matrixd {a:.1f} msg/s (runs " + " ".join(f"{r['rate']:.1f}" for r in s["matrixd"]) +
          f"), smtp-source {median(s['smtp_source'], 'rate'):.1f}, ideal "
          f"{s['connections']:.1f}; target ≥ {TARGET_SLOW:.0f}: {verdict(good)}")
    if "memory" in res:
        mem = res["memory"]
        conns = [r["connections"] for r in mem[0]["runs"]]
        w("")
        w(f"3. memory: --once sending to smtp-sink for {args.mem_seconds:.0f} s, then SIGTERM; "
          "peak RSS over the whole run (GNU time); the same article mix at every size")
        w("   subscribers      queued  import s  publish s (peak RSS)  " +
          "  ".join(f"N={c}: peak RSS (msg/s)" for c in conns))
        for row in mem:
            cells = "  ".join(f"{mb(r['rss_kib']):11.1f} MB ({r['rate']:5,.0f})"
                              for r in row["runs"])
            w(f"   {row['subscribers']:11,}  {row['queued']:10,}  {row['import_s']:8.1f}  "
              f"{row['publish_s']:9.1f} ({mb(row['publish_rss_kib']):5.1f} MB)  {cells}")
        big = max(mem, key=lambda r: r["subscribers"])
        parts = []
        for i, c in enumerate(conns):
            peaks = [mb(r["runs"][i]["rss_kib"]) for r in mem]
            under = mb(big["runs"][i]["rss_kib"]) < TARGET_RSS_MB
            ok &= under
            parts.append(f"N={c} {mb(big['runs'][i]['rss_kib']):.1f} MB {verdict(under)} "
                         f"(spread over the sizes {max(peaks) - min(peaks):.1f} MB)")
        w(f"   target < {TARGET_RSS_MB:.0f} MB at {big['subscribers']:,} subscribers, flat: " +
          "; ".join(parts))
    w("")
    w("all targets met" if ok else "SOME TARGETS MISSED")
    print("\n".join(lines))
    return ok


def versions():
    def first_line(args):
        try:
            return subprocess.run(args, capture_output=True, text=True).stdout.split("\n")[0]
        except OSError:
            return "?"
    pf = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "postfix"], capture_output=True,
                        text=True).stdout or "?"
    curl = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libcurl3-gnutls"],
                          capture_output=True, text=True).stdout or "?"
    cpu = "?"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    except (OSError, AttributeError):
        pass
    return (f"{first_line([str(MATRIXD), '--version'])}, libcurl {curl}, postfix {pf}; "
            f"{os.cpu_count()} × {cpu}; {platform.release()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=1334)
    ap.add_argument("--connections", default="4,16")
    ap.add_argument("--only", default="throughput,slow,memory")
    ap.add_argument("--mem-sizes", default="10000,50000,100000")
    ap.add_argument("--mem-seconds", type=float, default=20)
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()
    args.connections = [int(x) for x in args.connections.split(",")]
    args.mem_sizes = [int(x) for x in args.mem_sizes.split(",")]
    only = set(args.only.split(","))
    for p in (MATRIXD, MATRIXCTL):
        if not os.access(p, os.X_OK):
            die(f"{p} missing: run make first")
    tool("smtp-sink"), tool("smtp-source")
    if subprocess.run(["pgrep", "-x", "master"], capture_output=True).returncode == 0:
        print("bench/send: note: a Postfix master daemon is running; it is not used, but its "
              "CPU use disturbs the figures", file=sys.stderr)

    # SIGTERM/SIGINT unwind through the finally below, which stops our servers
    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    global WORK
    work = WORK = Path(tempfile.mkdtemp(prefix="matrixd-bench-send."))
    res = {"machine": versions(),
           "load_before": loadavg()}
    try:
        if "throughput" in only:
            print("1. throughput …", file=sys.stderr)
            throughput(work, args, res)
        if "slow" in only:
            print("2. slow relay …", file=sys.stderr)
            slow(work, args, res)
        if "memory" in only:
            print("3. memory …", file=sys.stderr)
            memory(work, args, res)
    except KeyboardInterrupt:
        print("bench/send: interrupted", file=sys.stderr)
        return 130
    finally:
        clean_up(work)
    res["load_after"] = loadavg()
    ok = report(res, args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
