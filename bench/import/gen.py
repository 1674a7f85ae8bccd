#!/usr/bin/python3
"""Writes N generated subscriber rows as CSV (header email,name,mode).

    gen.py N FILE [SEED]

The rows look like a real list exported from a spreadsheet: addresses in
no particular order (so index inserts land all over the B-tree, as they do
with real data), mixed-case domains, Chinese and Latin names, some quoted
with commas, one in ten in digest mode. Deterministic for a given seed.
Also used by tests/system/test_import.py.
"""
import random
import sys

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
LATIN = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi",
         "Ivan", "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil"]
DOMAINS = ["example.org", "Example.com", "mail.example.net", "ExAmple.cn",
           "students.example.edu", "research.example.org"]


def rows(n, seed=1):
    rnd = random.Random(seed)
    off = rnd.randrange(0, 1 << 32)
    for i in range(n):
        # Knuth's multiplicative hash is a bijection on 32-bit integers:
        # unique, scattered numbers without remembering the ones used
        v = (i * 2654435761 + off) % (1 << 32)
        r = rnd.random()
        if r < 0.45:
            name = rnd.choice(SURNAMES) + rnd.choice(GIVEN) + (rnd.choice(GIVEN) if r < 0.2 else "")
        elif r < 0.9:
            name = rnd.choice(LATIN) + " " + rnd.choice(LATIN)[0] + "."
        elif r < 0.95:
            name = '"' + rnd.choice(LATIN) + ", " + rnd.choice(LATIN) + '"'
        else:
            name = ""
        local = "%s.%d" % (rnd.choice(LATIN).lower(), v)
        mode = "digest" if rnd.random() < 0.1 else "article"
        yield "%s@%s,%s,%s\n" % (local, rnd.choice(DOMAINS), name, mode)


def main():
    n = int(sys.argv[1])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    with open(sys.argv[2], "w", encoding="utf-8", newline="") as f:
        f.write("email,name,mode\n")
        buf = []
        for line in rows(n, seed):
            buf.append(line)
            if len(buf) == 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))


if __name__ == "__main__":
    main()
