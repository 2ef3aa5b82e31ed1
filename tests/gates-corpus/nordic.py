#!/usr/bin/env python3
"""Writes nordic.jsonl: Nordic personal identity numbers (Swedish personnummer and
samordningsnummer, Norwegian fødselsnummer and D-numbers, Danish CPR, Finnish henkilötunnus) in
context, with look-alikes that fail their checks or lack context, and credentials inside URLs.

Every number is built from the public format and check-digit rules (Skatteverket's Luhn rule,
Skatteetaten's two mod-11 digits, the CPR date rule, DVV's mod-31 check character) from random
dates and serials (fixed seed); none belongs to a real person. Every password is random.
Run: python3 tests/gates-corpus/nordic.py
"""
import json, os, random, string

R = random.Random(20261130)
OUT = os.path.dirname(os.path.abspath(__file__))
rows = []


def add(sid, text, labels, source):
    for l in labels:
        assert l["value"] in text, (sid, text)
    rows.append({"id": sid, "text": text, "labels": labels, "source": source})


def L(cat, v):
    return {"category": cat, "value": v}


def luhn_ok(s):
    t = 0
    for i, c in enumerate(reversed(s)):
        v = int(c)
        if i % 2:
            v *= 2
            v -= 9 if v > 9 else 0
        t += v
    return t % 10 == 0


def date():
    y, m = R.randint(1930, 2020), R.randint(1, 12)
    d = R.randint(1, 28)
    return y, m, d


def se(coordination=False):
    y, m, d = date()
    if coordination:
        d += 60
    body = f"{y % 100:02d}{m:02d}{d:02d}{R.randint(0, 999):03d}"
    c = next(str(c) for c in range(10) if luhn_ok(body + str(c)))
    return y, body + c


def no_fnr(d_number=False):
    while True:
        y, m, d = date()
        dd = d + 40 if d_number else d
        nine = f"{dd:02d}{m:02d}{y % 100:02d}{R.randint(0, 999):03d}"
        v = [int(c) for c in nine]
        k1 = 11 - sum(w * x for w, x in zip([3, 7, 6, 1, 8, 9, 4, 5, 2], v)) % 11
        k1 = 0 if k1 == 11 else k1
        if k1 == 10:
            continue
        v.append(k1)
        k2 = 11 - sum(w * x for w, x in zip([5, 4, 3, 2, 7, 6, 5, 4, 3, 2], v)) % 11
        k2 = 0 if k2 == 11 else k2
        if k2 == 10:
            continue
        return nine + str(k1) + str(k2)


def dk():
    y, m, d = date()
    return f"{d:02d}{m:02d}{y % 100:02d}", f"{R.randint(0, 9999):04d}"


FI_CHARS = "0123456789ABCDEFHJKLMNPRSTUVWXY"


def fi():
    y, m, d = date()
    sign = "-" if y < 2000 else "A"
    dmy = f"{d:02d}{m:02d}{y % 100:02d}"
    z = f"{R.randint(2, 899):03d}"
    return dmy + sign + z + FI_CHARS[int(dmy + z) % 31]


SRC_SE = "generated: Skatteverket personnummer format (Luhn)"
SRC_NO = "generated: Skatteetaten fødselsnummer format (two mod-11 digits)"
SRC_DK = "generated: CPR format (date + serial)"
SRC_FI = "generated: DVV henkilötunnus format (mod-31 check character)"
NEG = "hard negative"

for k in range(12):
    y, n = se(coordination=k % 4 == 3)
    forms = [f"{n[:6]}-{n[6:]}", n, f"{y // 100}{n[:6]}-{n[6:]}", f"{y // 100}{n}"]
    v = forms[k % 4]
    t = R.choice(["Personnummer: {v}", "Kundens personnummer är {v}.", "samordningsnummer {v}", '{{"personnummer": "{v}"}}', "Pnr {v}, Stockholm"]).format(v=v)
    add(f"se-{k}", t, [L("national_id", v)], SRC_SE)
for k in range(6):
    _, n = se()
    bad = n[:9] + str((int(n[9]) + 1 + k % 8) % 10)
    add(f"negative-se-{k}", f"Personnummer: {bad[:6]}-{bad[6:]}", [], NEG + ": Luhn fails")
    add(f"negative-se-noctx-{k}", f"Order {n[:6]}-{n[6:]} shipped", [], NEG + ": no context")
for k in range(10):
    n = no_fnr(d_number=k % 3 == 2)
    v = n if k % 2 == 0 else f"{n[:6]} {n[6:]}"
    t = R.choice(["Fødselsnummer: {v}", "fnr {v}", "D-nummer {v} (utenlandsk arbeidstaker)", "Personnummer {v}"]).format(v=v)
    add(f"no-{k}", t, [L("national_id", v)], SRC_NO)
for k in range(5):
    n = no_fnr()
    bad = n[:10] + str((int(n[10]) + 1) % 10)
    add(f"negative-no-{k}", f"Fødselsnummer: {bad}", [], NEG + ": second check digit fails")
    add(f"negative-no-noctx-{k}", f"Tracking {n}", [], NEG + ": no context")
for k in range(8):
    dmy, s = dk()
    v = f"{dmy}-{s}" if k % 2 == 0 else dmy + s
    t = R.choice(["CPR-nr.: {v}", "cpr {v}", "Borgerens CPR-nummer er {v}.", "personnummer {v}"]).format(v=v)
    add(f"dk-{k}", t, [L("national_id", v)], SRC_DK)
for k in range(4):
    add(f"negative-dk-{k}", f"CPR {R.randint(32, 39)}{R.randint(1, 12):02d}{R.randint(50, 99)}-{R.randint(0, 9999):04d}", [], NEG + ": no such day")
    dmy, s = dk()
    add(f"negative-dk-noctx-{k}", f"Faktura {dmy}-{s} betalt", [], NEG + ": no context")
for k in range(10):
    v = fi()
    t = R.choice(["Henkilötunnus: {v}", "hetu {v}", "Asiakkaan henkilötunnus on {v}.", "id {v}"]).format(v=v)
    add(f"fi-{k}", t, [L("national_id", v)], SRC_FI)
for k in range(5):
    v = fi()
    wrong = FI_CHARS[(FI_CHARS.index(v[-1]) + 1 + k) % 31]
    add(f"negative-fi-{k}", f"Henkilötunnus: {v[:-1]}{wrong}", [], NEG + ": check character fails")

# Credentials inside URLs.
AN = string.ascii_letters + string.digits
SRC_URL = "hand-written templates with random passwords: RFC 3986 userinfo"
for k in range(12):
    pw = "".join(R.choice(AN) for _ in range(R.randint(8, 20)))
    user = R.choice(["deploy", "ci", "alice", "svc-build", "admin", "bot"])
    scheme = R.choice(["https", "http", "wss", "git+https", "ssh"])
    host = R.choice(["artifacts.acme-corp.com", "git.internal.net", "nexus.corp.io:8443", "192.0.2.10", "stream.acme.io"])
    t = R.choice([
        "curl -O {s}://{u}:{p}@{h}/releases/app.tar.gz",
        "git remote add origin {s}://{u}:{p}@{h}/team/repo.git",
        "webhook_target: {s}://{u}:{p}@{h}/hook",
        "Fetch it from {s}://{u}:{p}@{h}/files and unpack.",
        '{{"registry": "{s}://{u}:{p}@{h}/v2/"}}',
    ]).format(s=scheme, u=user, p=pw, h=host)
    add(f"url-credentials-{k}", t, [L("secret", pw)], SRC_URL)
for k, t in enumerate([
    "https://user@example.com/path",
    "Health check: http://localhost:8080/health",
    "Log in at https://portal.acme.io:8443/login",
    "export URL=https://user:${PASSWORD}@nexus.acme.io/repo",
    "Format: https://USER:<password>@host/path",
    "Follow us at https://mastodon.social/@acme",
    "See https://example.com/a:b@c for the syntax.",
    "mailto:team@acme.io",
]):
    add(f"negative-url-{k}", t, [], NEG + ": URL without an inline password")

with open(os.path.join(OUT, "nordic.jsonl"), "w") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(len(rows), "samples")
