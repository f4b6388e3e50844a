#!/usr/bin/env python3
"""An independent verifier of minegate evidence, written from docs/evidence.md
alone (Python 3 with the `cryptography` package for Ed25519). It checks the
test vectors: every root and proof, and the artifact's evidence step by step.
Usage: verify-evidence.py tests/vectors/evidence.json"""
import json, hashlib, base64, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
v = json.load(open(sys.argv[1]))
H = lambda b: hashlib.sha256(b).digest()
node = lambda l, r: H(b"\x01" + l + r)
leaves = [H(b"\x00" + e.encode()) for e in v["entries"]]
assert [l.hex() for l in leaves] == v["leaf_hashes"]
def mth(ls):
    if not ls: return H(b"")
    if len(ls) == 1: return ls[0]
    k = 1
    while k * 2 < len(ls): k *= 2
    return node(mth(ls[:k]), mth(ls[k:]))
assert [mth(leaves[:n]).hex() for n in range(len(leaves)+1)] == v["roots"]
def incl(index, size, leaf, proof, root):
    if index >= size: return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0: return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while fn & 1 == 0 and fn != 0: fn >>= 1; sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1; sn >>= 1
    return sn == 0 and r == root
for c in v["inclusion"]:
    assert incl(c["index"], c["size"], leaves[c["index"]], [bytes.fromhex(h) for h in c["proof"]], bytes.fromhex(v["roots"][c["size"]])), c
def cons(m, n, old, new, proof):
    if m == n: return not proof and old == new
    if m == 0: return not proof
    if m & (m - 1) == 0: proof = [old] + proof
    fn, sn = m - 1, n - 1
    while fn & 1: fn >>= 1; sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0: return False
        if fn & 1 or fn == sn:
            fr = node(c, fr); sr = node(c, sr)
            while fn & 1 == 0 and fn != 0: fn >>= 1; sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1; sn >>= 1
    return sn == 0 and fr == old and sr == new
for c in v["consistency"]:
    assert cons(c["old_size"], c["new_size"], bytes.fromhex(v["roots"][c["old_size"]]), bytes.fromhex(v["roots"][c["new_size"]]), [bytes.fromhex(h) for h in c["proof"]]), c
# the artifact
ev = v["evidence"]; artifact = bytes.fromhex(ev["artifact"]); entry = bytes.fromhex(ev["entry"])
seq, kind, subject, at, payload = entry.decode().split("\n", 4)
assert kind == "FILING_ACCEPTED" and int(seq) - 1 == ev["leaf_index"]
assert json.loads(payload)["receipt_sha256"] == hashlib.sha256(artifact).hexdigest()
note = ev["checkpoint"]; i = note.rindex("\n\n"); text, sigs = note[:i+1], note[i+2:]
pub = bytes.fromhex(v["public_key"]); name = v["key_name"]
keyhash = H(name.encode() + b"\n" + b"\x01" + pub)[:4]
ok = False
for line in sigs.splitlines():
    assert line.startswith("— ")
    n, b = line[2:].split(" ", 1); blob = base64.b64decode(b)
    if n == name and blob[:4] == keyhash:
        Ed25519PublicKey.from_public_bytes(pub).verify(blob[4:], text.encode()); ok = True
assert ok
origin, size, root = text.split("\n")[:3]
assert origin == name
assert incl(ev["leaf_index"], int(size), H(b"\x00" + entry), [bytes.fromhex(h) for h in ev["inclusion_proof"]], base64.b64decode(root))
# tampering is caught
assert not incl(ev["leaf_index"], int(size), H(b"\x00" + entry + b" "), [bytes.fromhex(h) for h in ev["inclusion_proof"]], base64.b64decode(root))
print("all vectors verify independently")
