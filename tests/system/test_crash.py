"""The kill -9 campaign: matrixd killed again and again at random moments
(while it publishes and queues an issue, while it recovers from the last
kill, in the middle of sending), through a real SMTP server and through the
Maildir transport. After each kill the store says which deliveries were in
flight (claimed, 'sending'); those the relay already has are the only ones
that may arrive twice (through SMTP; the Maildir transport sees what it has
and writes nothing twice). At the end: nothing lost (every delivery arrived,
every row 'sent'), every duplicate explained by a kill, and at most
5 x smtp.connections in flight at any kill (docs/design.md, "Duplicates
after a crash").

MATRIXD_KILL_TRIALS (default 10) sets the number of kills per transport;
`make torture` runs 50. MATRIXD_KILL_SEED replays a campaign."""
import bisect
import os
import random
import re
import signal
import sqlite3
import subprocess
import time

from conftest import DATA, MATRIXD, SEED
from test_delivery import smtp_env
from test_files import complete

TRIALS = int(os.environ.get("MATRIXD_KILL_TRIALS", "10"))
CONNECTIONS = 4
BOUND = 5 * CONNECTIONS
MID = re.compile(rb"^Message-ID:\s*<matrix\.(\d+)-", re.M | re.I)
BOUNDARY = re.compile(rb'^Content-Type: multipart/alternative;\s*boundary="?([^";\s]+)', re.M | re.I)


def delivery_id(raw):
    m = MID.search(raw[:8192])
    assert m, raw[:300]
    return int(m.group(1))


def rows(env, state=None):
    db = sqlite3.connect(env.db)
    try:
        if state:
            return {r[0] for r in db.execute("SELECT id FROM deliveries WHERE state = ?",
                                             (state,))}
        return dict(db.execute("SELECT state, count(*) FROM deliveries GROUP BY state"))
    finally:
        db.close()


def queued(env):
    db = sqlite3.connect(env.db)
    try:
        return db.execute("SELECT count(*) FROM issues WHERE queued_at IS NOT NULL"
                          ).fetchone()[0] > 0
    finally:
        db.close()


def import_subscribers(env, n_article, n_digest):
    csv = "email,name,mode\n" + "".join(f"r{i}@example.org,,article\n" for i in range(n_article))
    csv += "".join(f"d{i}@example.org,,digest\n" for i in range(n_digest))
    (env.tmp / "subs.csv").write_text(csv)
    env.ctl("import", env.tmp / "subs.csv", check=0)


class MaildirSeen:
    """Delivery ids of the messages in a Maildir's new/, in arrival order."""

    def __init__(self, path):
        self.new = path / "new"
        self.names, self.ids = set(), []

    def count(self):
        try:
            return len(os.listdir(self.new))
        except FileNotFoundError:
            return 0

    def __call__(self):
        if self.new.exists():
            for name in sorted(set(os.listdir(self.new)) - self.names):
                self.names.add(name)
                self.ids.append(delivery_id((self.new / name).read_bytes()))
        return list(self.ids)


def campaign(env, received, count, total, label):
    """Kills matrixd TRIALS times, then lets it finish; checks the ledger
    against what arrived. received() lists the delivery ids that arrived,
    count() how many (cheaply)."""
    seed = int(os.environ.get("MATRIXD_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kills, marks, again_sets, prev_inflight = [], [], [], set()
    t0 = time.time()
    for k in range(TRIALS):
        before = count()
        # the daemon proper, or --once: both recover the same way
        args = ["--once"] if k % 2 == 0 else []
        proc = subprocess.Popen([str(MATRIXD), "-c", str(env.conf), *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if k == 0 or rng.random() < 0.25:
            # while it publishes and queues the issue, or recovers the last kill
            # (and never more messages than a mid-send kill lets through:
            # a fast daemon would otherwise send the rest within 0.4 s)
            when = time.time() + (rng.uniform(0.01, 0.15) if k == 0 else rng.uniform(0.01, 0.4))
            while time.time() < when and proc.poll() is None and count() < before + 180:
                time.sleep(0.002)
        else:
            want = before + rng.randint(20, 180)
            end = time.time() + 120
            while count() < want and proc.poll() is None and time.time() < end:
                time.sleep(0.002)
        assert proc.poll() is None, f"{label}: matrixd finished before kill {k + 1} " \
                                    f"(seed {seed}): too few messages for {TRIALS} kills"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)  # what the relay already had is counted now
        inflight = rows(env, "sending")
        got = received()
        again = inflight & set(got)  # the relay has them: they may go out twice
        # where the kill struck, as the store tells it
        if not queued(env):
            what = "publishing"
        elif len(got) > before:
            what = "sending"
        elif inflight and inflight == prev_inflight:
            what = "recovery"  # before it put the last kill's rows back
        elif inflight:
            what = "claimed"  # before the first message of the run was through
        else:
            what = "starting"
        prev_inflight = inflight
        kills.append((what, len(got) - before, len(inflight), len(again)))
        marks.append(len(got))
        again_sets.append(again)
        assert len(inflight) <= BOUND, (label, k, kills, seed)
    p = env.matrixd("--once", timeout=600)
    assert p.returncode == 0, p.stderr
    got = received()
    all_ids = rows(env, "sent")
    assert rows(env) == {"sent": total}, (label, rows(env), seed)  # nothing lost
    assert set(got) == all_ids and len(all_ids) == total
    # Each copy after the first is the duplicate of the last kill before it
    # that found the delivery in flight and already at the relay; a copy no
    # kill explains is a bug.
    per_kill = [0] * TRIALS
    seen, arrivals = set(), {}
    for pos, i in enumerate(got):
        arrivals.setdefault(i, []).append(pos)
    for pos, i in enumerate(got):
        if i not in seen:
            seen.add(i)
            continue
        k = bisect.bisect_right(marks, pos) - 1
        while k >= 0 and i not in again_sets[k]:
            k -= 1
        assert k >= 0, (label, "a duplicate no kill explains", i, seed)
        # still in flight from an earlier kill (the runs between were killed
        # before they sent it again): that earlier kill's duplicate
        while k > 0 and i in again_sets[k - 1] and \
                not any(marks[k - 1] <= p < marks[k] for p in arrivals[i]):
            k -= 1
        per_kill[k] += 1
    duplicates = len(got) - total
    for k, n in enumerate(per_kill):
        assert n <= kills[k][3] <= BOUND, (label, k, per_kill, kills, seed)
    print(f"\n{label}: {TRIALS} kills (seed {seed}), {total} deliveries, lost 0, "
          f"duplicates {duplicates} ({duplicates / TRIALS:.1f} per kill, at most "
          f"{max(per_kill)}; bound {BOUND}), {time.time() - t0:.0f} s")
    print("  kill  when        sent  in-flight  duplicates")
    for k, (what, sent, inflight, _) in enumerate(kills):
        print(f"  {k + 1:4}  {what:10}  {sent:4}  {inflight:9}  {per_kill[k]:10}")
    return per_kill


def test_kill_campaign_smtp(tmp_path, server):
    env = smtp_env(tmp_path, server, smtp_connections=CONNECTIONS)
    n = 15 * TRIALS  # enough mail to go round: at most 180 are sent between kills
    import_subscribers(env, n, 10)  # n x 15 articles + 10 digests
    total = n * 15 + 10
    (env.tmp / "issues" / SEED.name).write_bytes(SEED.read_bytes())

    def received():
        with server.lock:
            return [delivery_id(r.data) for r in server.received]

    campaign(env, received, server.count, total, "smtp")


def test_kill_campaign_maildir(env):
    """The same through the Maildir transport, which names each message by
    its Message-ID's token and so never writes one twice: no duplicates at
    all. A message killed half-written never shows in new/ (each file there
    is whole); it is swept from tmp/ when matrixd starts again."""
    env.write_conf(smtp_connections=CONNECTIONS)
    n = 30 * TRIALS  # files come fast: a kill can land well past its aim
    import_subscribers(env, n, 10)
    total = n * 15 + 10
    (env.tmp / "issues" / SEED.name).write_bytes(SEED.read_bytes())
    seen = MaildirSeen(env.tmp / "maildir")
    per_kill = campaign(env, seen, seen.count, total, "maildir")
    assert sum(per_kill) == 0, per_kill
    assert list((env.tmp / "maildir" / "tmp").iterdir()) == []
    files = sorted((env.tmp / "maildir" / "new").iterdir())
    for f in files:  # whole: the closing MIME boundary is there
        raw = f.read_bytes()
        b = BOUNDARY.search(raw[:8192])
        assert b and raw.rstrip().endswith(b"--" + b.group(1) + b"--"), f.name
    for f in files[::50]:  # and a sample parses strictly
        complete(f)
