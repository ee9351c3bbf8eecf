#!/usr/bin/env python3
"""Independent verifier for lokey beacon pulses and draw receipts, format version 1.

Written from docs/beacon.md and docs/draws.md alone (and checked against
docs/beacon-vectors.json and docs/draws-vectors.json), without reading lokey's
implementation, so that it can cross-check it.

Usage:
  verify-beacon.py [--pubkey KEY] FILE|-        verify a pulse file (docs/beacon.md §7, §8)
  verify-beacon.py --pubkey KEY --receipt FILE  verify a draw receipt (docs/draws.md §6)
  verify-beacon.py --vectors FILE               check the beacon test vector file
  verify-beacon.py --draw-vectors FILE          check the draw test vector file

KEY is 128 hex digits (X||Y), 130 hex digits (04||X||Y), a path to a PEM file, or PEM
text. Without --pubkey a pulse file's "publicKey" is used, with a warning: a key must be
pinned from a trusted source, never taken only from the file you were sent. A receipt
always needs --pubkey.

Exit status: 0 valid; 1 invalid (a pulse fails a numbered check of beacon.md §8, a pulse
with a missing or malformed member failing check 1 or 2; a receipt fails a step of
draws.md §6, named as there); 2 usage or input error (unreadable file, malformed JSON, a
file that is not one of the §7 forms, a receipt that is not a version-1 receipt object,
no key, bad key).
"""

import argparse
import base64
import copy
import datetime
import hashlib
import json
import re
import sys

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

MAGIC = b"lokey beacon pulse"
MESSAGE_LEN = 321
# §4: DER SubjectPublicKeyInfo of a P-256 key is this prefix followed by X || Y.
SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d03010703420004")
STATUS_CHAIN_START, STATUS_EMULATED = 0x01, 0x04

# §2 layout after magic: (JSON member, kind, length in bytes), in message order.
FIELDS = [
    ("version", "int", 2),
    ("chainIndex", "int", 8),
    ("pulseIndex", "int", 8),
    ("timeStamp", "time", 8),
    ("period", "int", 4),
    ("serialNumber", "hex", 9),
    ("keyId", "hex", 32),
    ("localRandomValue", "hex", 64),
    ("precommitmentValue", "hex", 64),
    ("previousOutputValue", "hex", 64),
    ("counter", "int", 4),
    ("statusCode", "int", 4),
    ("commitmentValue", "hex", 32),
]
assert len(MAGIC) + sum(n for _, _, n in FIELDS) == MESSAGE_LEN

CHECKS = {  # docs/beacon.md §8, numbered as there
    1: "version is 1",
    2: "rebuild the message M",
    3: "outputValue = SHA-512(M)",
    4: "keyId = SHA-256(SubjectPublicKeyInfo of the key)",
    5: "signatureValue is a valid ECDSA P-256/SHA-256 signature of M",
    6: "pulseIndex >= 1, period > 0, status bit 0x01 exactly when pulseIndex is 1, "
       "and then previousOutputValue all zero",
    7: "b.pulseIndex = a.pulseIndex + 1",
    8: "b.previousOutputValue = a.outputValue",
    9: "a.precommitmentValue = SHA-512(b.localRandomValue)",
    10: "b.period = a.period and b.timeStamp >= a.timeStamp + a.period",
    11: "b.serialNumber = a.serialNumber and b.counter >= a.counter",
}
# §5: status bits and their names (the informative "status" member lists them).
STATUS_NAMES = {0x01: "chain start", 0x02: "time gap", 0x04: "emulated", 0x08: "unclean stop",
                0x10: "counter mismatch", 0x20: "parameters changed", 0x40: "first"}

TIME_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z")
HEX_RE = re.compile(r"[0-9a-f]*")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class InputError(Exception):
    """Usage or input error: exit status 2."""


class FieldError(ValueError):
    """A pulse member is missing or malformed: the message cannot be rebuilt."""


# ---------------------------------------------------------------- fields and message

def time_to_ms(text):
    """'YYYY-MM-DDTHH:MM:SS.sssZ' (UTC, exactly three fraction digits) -> Unix ms."""
    m = TIME_RE.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise FieldError(f"timeStamp {text!r} is not YYYY-MM-DDTHH:MM:SS.sssZ")
    y, mo, d, h, mi, s, ms = map(int, m.groups())
    try:  # rejects month 13, Feb 30, hour 24, second 60, ...
        t = datetime.datetime(y, mo, d, h, mi, s, tzinfo=datetime.timezone.utc)
    except ValueError as e:
        raise FieldError(f"timeStamp {text!r}: {e}") from None
    value = (t - EPOCH) // datetime.timedelta(milliseconds=1) + ms
    if value < 0:
        raise FieldError(f"timeStamp {text!r} is before 1970 (the field is unsigned)")
    return value


def field_bytes(pulse, name, kind, length):
    if name not in pulse:
        raise FieldError(f"member {name!r} is missing")
    v = pulse[name]
    if kind == "time":
        return time_to_ms(v).to_bytes(length, "big")
    if kind == "int":
        if type(v) is not int or not 0 <= v < 1 << (8 * length):
            raise FieldError(f"{name} = {v!r} is not an unsigned {8 * length}-bit integer")
        return v.to_bytes(length, "big")
    return hex_member(pulse, name, length)


def hex_member(pulse, name, length):
    v = pulse.get(name)
    if not isinstance(v, str) or len(v) != 2 * length or not HEX_RE.fullmatch(v):
        raise FieldError(f"{name} is not {2 * length} lowercase hex digits")
    return bytes.fromhex(v)


def build_message(pulse):
    """§2: the 321-byte canonical message M."""
    if not isinstance(pulse, dict):
        raise FieldError("pulse is not a JSON object")
    m = MAGIC + b"".join(field_bytes(pulse, *f) for f in FIELDS)
    assert len(m) == MESSAGE_LEN
    return m


# ---------------------------------------------------------------- keys

def key_from_text(text):
    """Hex X||Y, hex 04||X||Y or PEM -> P-256 public key (raises ValueError)."""
    text = text.strip()
    if "-----BEGIN" in text:
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("PEM key is not a P-256 public key")
        return key
    if re.fullmatch(r"[0-9a-fA-F]{128}|04[0-9a-fA-F]{128}", text):
        raw = bytes.fromhex(text)
        point = raw if len(raw) == 65 else b"\x04" + raw
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    raise ValueError("not 128 hex digits (X||Y), 130 hex digits (04||X||Y) or PEM")


def load_key(arg):
    if "-----BEGIN" not in arg and not re.fullmatch(r"[0-9a-fA-F]{128,130}", arg.strip()):
        try:
            with open(arg, encoding="ascii") as f:
                arg = f.read()
        except OSError as e:
            raise InputError(f"--pubkey: cannot read {arg!r}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"--pubkey: {arg!r} is not a text file") from None
    try:
        return key_from_text(arg)
    except ValueError as e:
        raise InputError(f"bad public key: {e}") from None


def xy(key):
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]


def spki_der(key):
    """§4: the 91-byte DER SubjectPublicKeyInfo, built as the document spells it."""
    return SPKI_PREFIX + xy(key)


# ---------------------------------------------------------------- verification (§8)

def where(pulse):
    if isinstance(pulse, dict):
        return f"chain {pulse.get('chainIndex')!r} pulse {pulse.get('pulseIndex')!r}"
    return "pulse ?"


def status_names(code):
    return [name for bit, name in STATUS_NAMES.items() if code & bit]


def verify_pulses(pulses, key):
    """Run the checks of §8. Returns (failures, stats); failures are (position, pulse, check, detail),
    ordered by position and, for one pulse, by check."""
    key_id = hashlib.sha256(spki_der(key)).digest()
    failures = []
    good = []  # per pulse: the fields the link checks need, or None if M could not be rebuilt
    for pos, p in enumerate(pulses):
        def fail(check, detail, p=p, pos=pos):
            failures.append((pos, p, check, detail))

        if not isinstance(p, dict) or type(p.get("version")) is not int or p["version"] != 1:
            fail(1, f"version is {p.get('version') if isinstance(p, dict) else None!r}, not 1")
            good.append(None)
            continue
        try:
            m = build_message(p)
            output = hex_member(p, "outputValue", 64)
            signature = hex_member(p, "signatureValue", 64)
        except FieldError as e:
            fail(2, str(e))
            good.append(None)
            continue
        if hashlib.sha512(m).digest() != output:
            fail(3, "outputValue differs from SHA-512(M)")
        if m[57:89] != key_id:
            fail(4, f"keyId {m[57:89].hex()} is not the key's {key_id.hex()}")
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            key.verify(utils.encode_dss_signature(r, s), m, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            fail(5, "signature does not verify with the key")
        index, status, zero = p["pulseIndex"], p["statusCode"], not any(m[217:281])
        if index < 1 or p["period"] < 1:
            fail(6, f"pulseIndex {index}, period {p['period']}")
        elif bool(status & STATUS_CHAIN_START) != (index == 1) or (index == 1 and not zero):
            fail(6, f"pulseIndex {index} with statusCode {status:#x} and previousOutputValue "
                    f"{'zero' if zero else 'not zero'}")
        good.append({"pos": pos, "p": p, "m": m, "output": output, "time": int.from_bytes(m[36:44], "big")})

    # Links: each pulse b and the pulse a just before it in the file, when both have the same
    # chainIndex (§7 puts each chain's pulses together, so a is b's predecessor in its chain).
    links = 0
    for a, g in zip(good, good[1:]):
        if a is None or g is None or a["p"]["chainIndex"] != g["p"]["chainIndex"]:
            continue
        links += 1
        pa, pb, ma, mb = a["p"], g["p"], a["m"], g["m"]

        def fail(check, detail, pb=pb, pos=g["pos"], pa=pa):
            failures.append((pos, pb, check, f"{detail} (after pulse {pa['pulseIndex']})"))

        if pb["pulseIndex"] != pa["pulseIndex"] + 1:
            fail(7, f"pulseIndex {pb['pulseIndex']} does not follow {pa['pulseIndex']}")
        if mb[217:281] != a["output"]:
            fail(8, "previousOutputValue is not the previous pulse's outputValue")
        if ma[153:217] != hashlib.sha512(mb[89:153]).digest():
            fail(9, "previous pulse's precommitmentValue is not SHA-512(localRandomValue)")
        if pb["period"] != pa["period"] or g["time"] < a["time"] + pa["period"]:
            fail(10, f"period {pa['period']} -> {pb['period']}, time {a['time']} -> {g['time']} ms")
        if mb[48:57] != ma[48:57] or pb["counter"] < pa["counter"]:
            fail(11, f"serialNumber {pa['serialNumber']} -> {pb['serialNumber']}, "
                     f"counter {pa['counter']} -> {pb['counter']}")
    failures.sort(key=lambda f: (f[0], f[2]))
    ok = [g["p"] for g in good if g]
    return failures, {
        "pulses": len(pulses), "links": links, "chains": sorted({p["chainIndex"] for p in ok}),
        "emulated": sum(1 for p in ok if p["statusCode"] & STATUS_EMULATED),
        "starts": [f"chain {p['chainIndex']} ({', '.join(status_names(p['statusCode'])[1:]) or 'no reason given'})"
                   for p in ok if p["statusCode"] & STATUS_CHAIN_START],
    }


def describe(failure):
    pos, p, check, detail = failure
    return f"{where(p)} (#{pos + 1} in file): check {check} ({CHECKS[check]}) failed: {detail}"


# ---------------------------------------------------------------- pulse files (§7)

def no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise InputError(f"duplicate JSON member {k!r}")
        obj[k] = v
    return obj


def parse_json(text):
    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except (json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"malformed JSON: {e}") from None


def unwrap(item):
    if isinstance(item, dict) and isinstance(item.get("pulse"), dict):
        return item["pulse"]
    if isinstance(item, dict):
        return item
    raise InputError("a pulse is not a JSON object")


def read_pulse_file(text):
    """Returns (pulses, publicKey text or None) for any form of §7."""
    try:
        doc = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        # JSON lines, each {"pulse": P}.
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise InputError(f"malformed JSON: {e}") from None
        docs = [parse_json(line) for line in lines]
        if not all(isinstance(d, dict) and isinstance(d.get("pulse"), dict) for d in docs):
            raise InputError('a JSON line is not {"pulse": P}')
        pulses = [d["pulse"] for d in docs]
        check_order(pulses)
        return pulses, None
    except RecursionError:
        raise InputError("malformed JSON: nested too deeply") from None
    if isinstance(doc, list):
        pulses, key = [unwrap(x) for x in doc], None
    elif isinstance(doc, dict) and isinstance(doc.get("pulse"), dict):
        pulses, key = [doc["pulse"]], doc.get("publicKey")
    elif isinstance(doc, dict) and isinstance(doc.get("pulses"), list):
        pulses, key = [unwrap(x) for x in doc["pulses"]], doc.get("publicKey")
    else:
        raise InputError('not a pulse file: expected {"pulse": P}, {"pulses": [...]}, an array or JSON lines')
    if not pulses:
        raise InputError("the file holds no pulse")
    if key is not None and not isinstance(key, str):
        raise InputError('"publicKey" is not a string')
    check_order(pulses)
    return pulses, key


def check_order(pulses):
    """§7: one chain after another. (Increasing pulseIndex within a chain is check 7's.)"""
    seen, last = set(), None
    for p in pulses:
        chain = p.get("chainIndex")
        if type(chain) is not int or chain == last:
            continue
        if chain in seen:
            raise InputError(f"chain {chain} appears again after another chain: §7 puts each "
                             "chain's pulses together, one chain after another")
        seen.add(chain)
        last = chain


def read_input(name):
    try:
        if name == "-":
            return sys.stdin.read()
        with open(name, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {name}: {e}") from None


def cmd_verify(path, pubkey):
    pulses, file_key = read_pulse_file(read_input(path))
    if pubkey is not None:
        key = load_key(pubkey)
        if file_key is not None:
            try:
                if xy(key_from_text(file_key)) != xy(key):
                    print("note: the file's publicKey differs from --pubkey; using --pubkey", file=sys.stderr)
            except ValueError:
                print("note: the file's publicKey is malformed; using --pubkey", file=sys.stderr)
    elif file_key is not None:
        try:
            key = key_from_text(file_key)
        except ValueError as e:
            raise InputError(f"bad publicKey in file: {e}") from None
        print("WARNING: no --pubkey given; using the publicKey inside the file. Anyone can sign "
              "with their own key: pin the key from a trusted source.", file=sys.stderr)
    else:
        raise InputError("no key: give --pubkey (the file has no publicKey)")
    failures, st = verify_pulses(pulses, key)
    if failures:
        for f in failures:
            print("INVALID: " + describe(f))
        print(f"INVALID: {len(failures)} failed check(s) in {st['pulses']} pulse(s)")
        return 1
    key_id = hashlib.sha256(spki_der(key)).hexdigest()
    emu = (f"{st['emulated']} EMULATED pulse(s) (status 0x04: software key, not a chip)"
           if st["emulated"] else "no pulse emulated")
    print(f"VALID: {st['pulses']} pulse(s), {st['links']} link(s), {len(st['chains'])} chain(s) "
          f"{st['chains']}, {emu}; key sha256:{key_id}")
    if st["starts"]:
        print("chain start(s) (§9: suspicious if at a moment that mattered): " + "; ".join(st["starts"]))
    return 0


# ---------------------------------------------------------------- test vectors

FAILS_CHECK = {"output": 3, "signature": 5}  # the names §10 gives


def cmd_vectors(path):
    doc = parse_json(read_input(path))
    problems = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            problems.append(what)

    try:
        key = key_from_text(doc["publicKey"])
        der = spki_der(key)
        check(der.hex() == doc["spkiDer"], "spkiDer = §4 prefix || publicKey")
        lib_der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        check(lib_der == der, "§4 SPKI prefix agrees with the cryptography library's DER encoding")
        pem = doc["publicKeyPem"].strip().splitlines()
        check(pem[0] == "-----BEGIN PUBLIC KEY-----" and pem[-1] == "-----END PUBLIC KEY-----"
              and base64.b64decode("".join(pem[1:-1]), validate=True) == der, "publicKeyPem is the DER in base64")
        check(xy(key_from_text(doc["publicKeyPem"])) == xy(key), "publicKeyPem loads as publicKey")
        key_id = hashlib.sha256(der).hexdigest()
        check(key_id == doc["keyId"], f"keyId = SHA-256(spkiDer) = {key_id}")
        scalar = int(doc["privateScalar"], 16)
        private = ec.derive_private_key(scalar, ec.SECP256R1())
        check(xy(private.public_key()) == xy(key), "privateScalar * G = publicKey")
        if "SHA-256(\"lokey beacon test vector key\")" in doc.get("description", ""):
            check(hashlib.sha256(b"lokey beacon test vector key").hexdigest() == doc["privateScalar"],
                  "privateScalar = SHA-256(\"lokey beacon test vector key\") as the description says")

        pulses = [v["pulse"] for v in doc["pulses"]]
        for i, v in enumerate(doc["pulses"]):
            p = v["pulse"]
            name = f"pulse #{i} ({where(p)})"
            try:
                m = build_message(p)
            except FieldError as e:
                check(False, f"{name}: message rebuilds: {e}")
                continue
            check(m.hex() == v["message"], f"{name}: rebuilt M (321 bytes) = message")
            check(hashlib.sha256(m).hexdigest() == v["digest"], f"{name}: SHA-256(M) = digest")
            check(hashlib.sha512(m).hexdigest() == p["outputValue"], f"{name}: SHA-512(M) = outputValue")
            check(bool(p["statusCode"] & STATUS_EMULATED) == p.get("emulated"), f"{name}: emulated = statusCode & 0x04")
            check(p.get("status") == status_names(p["statusCode"]),
                  f"{name}: status {p.get('status')} names the bits of statusCode {p['statusCode']:#x} (§5)")
            sig = bytes.fromhex(p["signatureValue"])
            r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            try:
                key.verify(utils.encode_dss_signature(r, s), m, ec.ECDSA(hashes.SHA256()))
                check(True, f"{name}: signature verifies")
            except InvalidSignature:
                check(False, f"{name}: signature verifies")
            try:  # informative only: the spec says a verifier must not expect a particular signature
                det = private.sign(m, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
                same = utils.decode_dss_signature(det) == (r, s)
                print(f"info  {name}: signature {'is' if same else 'is NOT'} the RFC 6979 one")
            except (TypeError, UnsupportedAlgorithm):
                pass

        failures, st = verify_pulses(pulses, key)
        for f in failures:
            print("      " + describe(f))
        check(not failures, f"the chain verifies ({st['pulses']} pulses, {st['links']} links)")

        for t in doc["tampered"]:
            altered = [dict(p) for p in pulses]
            altered[t["pulse"]][t["member"]] = t["value"]  # "pulse" is a 0-based position in "pulses"
            failures, _ = verify_pulses(altered, key)
            shown = repr(t["value"]) if len(repr(t["value"])) < 30 else repr(t["value"])[:24] + "...'"
            what = f"tampered pulse #{t['pulse']} {t['member']} = {shown}: chain fails"
            expected = FAILS_CHECK.get(t.get("failsCheck"))
            if failures:
                first = failures[0][2]
                what += f" (first at check {first} {CHECKS[first]!r}; failsCheck {t.get('failsCheck')!r})"
                check(first == expected, what)
            else:
                check(False, what)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise InputError(f"malformed vector file: {type(e).__name__}: {e}") from None

    if problems:
        print(f"VECTORS INVALID: {len(problems)} problem(s)")
        return 1
    print("VECTORS OK")
    return 0


# ---------------------------------------------------------------- draws (docs/draws.md)

MASK64 = (1 << 64) - 1
REG_MAGIC, SEED_MAGIC = b"lokey draw registration", b"lokey draw seed"
COMMON = ("chainIndex", "commitPulseIndex", "leafIndex", "registeredMs", "kind", "label", "nonce")
KINDS = {  # §3: kind -> (code, its parameters in the receipt's registration)
    "integers": (1, ("n", "min", "max", "unique")),
    "sample": (2, ("k", "items")),
    "shuffle": (3, ("items",)),
    "decimal-fractions": (4, ("n", "places")),
    "strings": (5, ("n", "length", "characters")),
    "uuids": (6, ("n",)),
}
_UP, _LO, _DIG = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "0123456789"
NAMED_SETS = {  # §5.6; a registration holds the characters themselves
    "alnum": _UP + _LO + _DIG, "alpha": _UP + _LO, "lower": _LO, "upper": _UP, "digits": _DIG,
    "hex": _DIG + "abcdef", "base64url": _UP + _LO + _DIG + "-_",
    "printable": "".join(map(chr, range(0x21, 0x7F))),
}
STEPS = ("registration", "merkle path", "pulses", "precommitment", "seed", "values")  # §6


class StepFailure(Exception):
    """A receipt fails the §6 step `step`: exit status 1."""

    def __init__(self, step, detail):
        super().__init__(detail)
        self.step = step


def lp(b):
    return len(b).to_bytes(4, "big") + b


def encode_registration(reg):
    """§3: the bytes R of a receipt's registration. Raises ValueError if a member is missing,
    malformed, unknown, or outside the limits of §3."""
    if not isinstance(reg, dict):
        raise ValueError("registration is not an object")
    kind = reg.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    code, params = KINDS[kind]
    names = set(COMMON + params)
    if set(reg) != names:
        raise ValueError(f"members {sorted(names - set(reg))} missing, {sorted(set(reg) - names)} unexpected "
                         f"for kind {kind}")

    def num(name, bits, lo=0, hi=None):
        v = reg[name]
        hi = (1 << bits) - 1 if hi is None else hi
        if type(v) is not int or not lo <= v <= hi:
            raise ValueError(f"{name} = {v!r} is not an integer from {lo} to {hi}")
        return v.to_bytes(bits // 8, "big", signed=lo < 0)

    def utf8(v, what, limit):
        if not isinstance(v, str):
            raise ValueError(f"{what} is not a string")
        b = v.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, a ValueError
        if len(b) > limit:
            raise ValueError(f"{what} is longer than {limit} bytes")
        return b

    def items():
        v = reg["items"]
        if not isinstance(v, list) or not 1 <= len(v) <= 100000:
            raise ValueError("items is not a list of 1 to 100000 strings")
        return len(v).to_bytes(4, "big") + b"".join(lp(utf8(x, "an item", 1000)) for x in v)

    if kind == "integers":
        p = num("n", 32, 1, 100000) + num("min", 64, -1 << 63, (1 << 63) - 1) + num("max", 64, -1 << 63, (1 << 63) - 1)
        if type(reg["unique"]) is not bool:
            raise ValueError("unique is not true or false")
        span = integer_span(reg)
        if reg["unique"] and span != 0 and reg["n"] > span:
            raise ValueError(f"unique: n = {reg['n']} is larger than the range ({span} values)")
        p += bytes([reg["unique"]])
    elif kind == "sample":
        p = num("k", 32, 1, 100000) + items()
        if reg["k"] > len(reg["items"]):
            raise ValueError("k is larger than the number of items")
    elif kind == "shuffle":
        p = items()
    elif kind == "decimal-fractions":
        p = num("n", 32, 1, 100000) + num("places", 32, 1, 19)
        if reg["n"] * reg["places"] > 1000000:
            raise ValueError("n x places is larger than 1000000")
    elif kind == "strings":
        p = num("n", 32, 1, 100000) + num("length", 32, 1, 4096)
        if reg["n"] * reg["length"] > 1000000:
            raise ValueError("n x length is larger than 1000000")
        chars = reg["characters"]
        p += lp(utf8(chars, "characters", 1 << 32))
        if not chars or len(set(chars)) != len(chars):
            raise ValueError("characters is empty or holds a character twice")
    else:  # uuids
        p = num("n", 32, 1, 100000)
    nonce = reg["nonce"]
    if not isinstance(nonce, str) or len(nonce) % 2 or len(nonce) > 512 or not HEX_RE.fullmatch(nonce):
        raise ValueError("nonce is not lowercase hex of at most 256 bytes")
    return (REG_MAGIC + (1).to_bytes(2, "big") + num("chainIndex", 64) + num("commitPulseIndex", 64)
            + num("leafIndex", 32) + num("registeredMs", 64) + bytes([code]) + p
            + lp(utf8(reg["label"], "label", 1000)) + lp(bytes.fromhex(nonce)))


def integer_span(reg):
    """§5.1: (max - min + 1) mod 2^64; 0 stands for the whole 2^64."""
    return (reg["max"] - reg["min"] + 1) & MASK64


def merkle_root(leaves):
    """§4: RFC 9162 MTH over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)  # largest power of two smaller than N
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def root_from_path(leaf, index, size, path):
    """RFC 9162 §2.1.3.2: the root from a leaf hash, its index, the tree size and the path."""
    if not 0 <= index < size:
        raise ValueError(f"leafIndex {index} is not below treeSize {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("the path is too long")
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("the path is too short")
    return r


class Stream:
    """§5: the byte stream SHA-512(seed || u64(0)) || SHA-512(seed || u64(1)) || ..."""

    def __init__(self, seed):
        self.seed, self.block, self.buf, self.pos = seed, 0, b"", 0

    def read(self, n):
        out = b""
        while n:
            if self.pos == len(self.buf):
                self.buf = hashlib.sha512(self.seed + self.block.to_bytes(8, "big")).digest()
                self.block, self.pos = self.block + 1, 0
            take = min(n, len(self.buf) - self.pos)
            out += self.buf[self.pos:self.pos + take]
            self.pos, n = self.pos + take, n - take
        return out

    def next64(self):
        return int.from_bytes(self.read(8), "little")

    def below(self, s):
        """Lemire: uniform in [0, s); s = 0 means 2^64."""
        x = self.next64()
        if s == 0:
            return x
        m = x * s
        if m & MASK64 < s:
            t = ((1 << 64) - s) % s
            while m & MASK64 < t:
                m = self.next64() * s
        return m >> 64

    def shuffle(self, items):  # §5.3
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]
        return items

    def unique_offsets(self, span, n):  # §5.2
        if span != 0 and span <= 2 * n:
            a = list(range(span))
            for i in range(n):
                j = i + self.below(span - i)
                a[i], a[j] = a[j], a[i]
            return a[:n]
        first, taken, out = (span - n) & MASK64, set(), []
        for i in range(n):
            j = (first + i) & MASK64
            t = self.below((j + 1) & MASK64)
            t = j if t in taken else t
            taken.add(t)
            out.append(t)
        return self.shuffle(out)


def draw_values(reg, seed):
    """§5: the values of a draw from its (valid) registration and seed."""
    st, kind = Stream(seed), reg["kind"]
    if kind == "integers":
        span, n = integer_span(reg), reg["n"]
        offsets = st.unique_offsets(span, n) if reg["unique"] else [st.below(span) for _ in range(n)]
        return [((reg["min"] + o + (1 << 63)) & MASK64) - (1 << 63) for o in offsets]  # wrap to i64
    if kind == "sample":
        return [reg["items"][o] for o in st.unique_offsets(len(reg["items"]), reg["k"])]
    if kind == "shuffle":
        return st.shuffle(list(reg["items"]))
    if kind == "decimal-fractions":
        places = reg["places"]
        return [f"0.{st.below(10 ** places):0{places}d}" for _ in range(reg["n"])]
    if kind == "strings":
        c = reg["characters"]  # a str: one entry per Unicode code point
        return ["".join(c[st.below(len(c))] for _ in range(reg["length"])) for _ in range(reg["n"])]
    values = []  # uuids
    for _ in range(reg["n"]):
        b = bytearray(st.read(16))
        b[6], b[8] = (b[6] & 0x0F) | 0x40, (b[8] & 0x3F) | 0x80
        h = b.hex()
        values.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return values


def same_json(a, b):
    """Equal as JSON values (so 1, 1.0 and true differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_json, a, b))
    return a == b


def verify_receipt(rc, key):
    """§6. Returns a summary; raises StepFailure at the first failing step, InputError if `rc`
    is not a version-1 receipt object."""
    if not isinstance(rc, dict):
        raise InputError("the receipt is not a JSON object")
    if rc.get("version") != 1 or type(rc.get("version")) is not int:
        raise InputError(f"receipt version {rc.get('version')!r} is not 1")

    def need(ok, step, detail):
        if not ok:
            raise StepFailure(step, detail)

    def hexval(name, length, step):
        v = rc.get(name)
        need(isinstance(v, str) and len(v) == 2 * length and HEX_RE.fullmatch(v), step,
             f"{name} is not {2 * length} lowercase hex digits")
        return bytes.fromhex(v)

    # 1. registration
    reg, cp, dp = rc.get("registration"), rc.get("commitPulse"), rc.get("decidingPulse")
    try:
        r = encode_registration(reg)
    except ValueError as e:
        raise StepFailure("registration", str(e)) from None
    leaf = hashlib.sha256(b"\x00" + r).digest()
    need(hexval("leaf", 32, "registration") == leaf, "registration", f"leaf is not SHA-256(0x00 || R) = {leaf.hex()}")
    draw_id = f"{reg['chainIndex']}-{reg['commitPulseIndex']}-{reg['leafIndex']}"
    need(rc.get("id") == draw_id, "registration", f"id {rc.get('id')!r} is not the registration's {draw_id}")
    need(isinstance(cp, dict) and cp.get("chainIndex") == reg["chainIndex"]
         and cp.get("pulseIndex") == reg["commitPulseIndex"], "registration",
         f"commitPulse is not pulse ({reg['chainIndex']}, {reg['commitPulseIndex']})")

    # 2. merkle path
    size, path = rc.get("treeSize"), rc.get("path")
    need(type(size) is int and size >= 1, "merkle path", f"treeSize {size!r} is not a positive integer")
    need(isinstance(path, list) and all(isinstance(h, str) and len(h) == 64 and HEX_RE.fullmatch(h) for h in path),
         "merkle path", "path is not a list of 64-digit lowercase hex strings")
    try:
        root = root_from_path(leaf, reg["leafIndex"], size, [bytes.fromhex(h) for h in path])
    except ValueError as e:
        raise StepFailure("merkle path", str(e)) from None
    need(cp.get("commitmentValue") == root.hex(), "merkle path",
         f"the root {root.hex()} is not commitPulse.commitmentValue")

    # 3. pulses (beacon.md §8: checks 1-6 on each, 7-11 on the pair), 4. precommitment (check 9)
    key_id = hashlib.sha256(spki_der(key)).digest()
    need(hexval("keyId", 32, "pulses") == key_id, "pulses", f"keyId is not the key's {key_id.hex()}")
    need(isinstance(dp, dict) and dp.get("chainIndex") == cp["chainIndex"], "pulses",
         "decidingPulse is not in the commit pulse's chain")
    failures, st = verify_pulses([cp, dp], key)
    if failures:
        pos, _, check, detail = failures[0]
        step = "precommitment" if check == 9 else "pulses"
        raise StepFailure(step, f"{('commitPulse', 'decidingPulse')[pos]}: check {check} ({CHECKS[check]}): {detail}")

    # 5. seed
    seed = hashlib.sha512(SEED_MAGIC + bytes.fromhex(dp["localRandomValue"]) + root + leaf).digest()
    need(hexval("seed", 64, "seed") == seed, "seed", f"seed is not {seed.hex()[:32]}...")

    # 6. values
    values = draw_values(reg, seed)
    need(same_json(rc.get("values"), values), "values", f"values are not the recomputed {values!r:.200}")
    chars = reg.get("characters")
    named = next((n for n, c in NAMED_SETS.items() if c == chars), None)
    return {"id": draw_id, "label": reg["label"], "count": len(values), "leaf": leaf.hex(),
            "emulated": st["emulated"], "named": named, "commitTime": cp["timeStamp"], "kind": reg["kind"]}


def cmd_receipt(path, pubkey):
    if pubkey is None:
        raise InputError("--receipt needs --pubkey (a key from a trusted source)")
    key = load_key(pubkey)
    receipt = parse_json(read_input(path))
    try:
        s = verify_receipt(receipt, key)
    except StepFailure as e:
        print(f"INVALID: step {STEPS.index(e.step) + 1} ({e.step}) failed: {e}")
        return 1
    print(f"VALID: draw {s['id']} {s['label']!r}: {s['count']} value(s) ({s['kind']}"
          + (f", characters {s['named']}" if s["named"] else "") + ")")
    print(f"leaf {s['leaf']}, commit pulse at {s['commitTime']}: check that they match the announcement "
          f"(draws.md §8); key sha256:{hashlib.sha256(spki_der(key)).hexdigest()}")
    if s["emulated"]:
        print("EMULATED: the pulses have status 0x04 (software key, not a chip)")
    return 0


def set_pointer(doc, pointer, value):
    """RFC 6901: replace the value at `pointer` in doc."""
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise ValueError(f"bad JSON pointer {pointer!r}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
    for p in parts[:-1]:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    doc[int(parts[-1]) if isinstance(doc, list) else parts[-1]] = value


def cmd_draw_vectors(path):
    doc = parse_json(read_input(path))
    problems = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            problems.append(what)

    def outcome(receipt):
        try:
            verify_receipt(receipt, key)
            return None
        except StepFailure as e:
            return e.step
        except InputError as e:
            return f"input error ({e})"

    try:
        key = key_from_text(doc["publicKey"])
        receipts = doc["receipts"]
        check(len(doc["encodings"]) == len(receipts), "one encoding per receipt")
        for i, (enc, rc) in enumerate(zip(doc["encodings"], receipts)):
            name = f"receipt #{i} ({rc.get('id')}, {rc['registration'].get('kind')})"
            try:
                check(encode_registration(rc["registration"]).hex() == enc, f"{name}: R = encodings[{i}]")
            except ValueError as e:
                check(False, f"{name}: R = encodings[{i}]: {e}")
            step = outcome(rc)
            check(step is None, f"{name}: verifies" + (f" (fails at {step})" if step else ""))
        # §4 cross-check: when the vectors hold every leaf of a commit pulse, their MTH is its root.
        trees = {}
        for rc in receipts:
            reg = rc["registration"]
            trees.setdefault((reg["chainIndex"], reg["commitPulseIndex"]), []).append(rc)
        for (chain, n), group in trees.items():
            group.sort(key=lambda rc: rc["registration"]["leafIndex"])
            if [rc["registration"]["leafIndex"] for rc in group] == list(range(group[0]["treeSize"])):
                root = merkle_root([bytes.fromhex(rc["leaf"]) for rc in group]).hex()
                check(root == group[0]["commitPulse"]["commitmentValue"],
                      f"MTH of the {len(group)} leaves of pulse ({chain}, {n}) = its commitmentValue")
        for t in doc["tampered"]:
            altered = copy.deepcopy(receipts[t["receipt"]])
            set_pointer(altered, t["pointer"], t["value"])
            step = outcome(altered)
            check(step == t["failsStep"], f"tampered receipt #{t['receipt']} {t['pointer']} = {t['value']!r:.30}: "
                                          f"fails at {step!r}, failsStep {t['failsStep']!r}")
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise InputError(f"malformed draw vector file: {type(e).__name__}: {e}") from None

    if problems:
        print(f"DRAW VECTORS INVALID: {len(problems)} problem(s)")
        return 1
    print("DRAW VECTORS OK")
    return 0


def main():
    ap = argparse.ArgumentParser(description="Verify lokey beacon pulses (docs/beacon.md) and draw receipts "
                                             "(docs/draws.md), format version 1.")
    ap.add_argument("--pubkey", metavar="KEY", help="128 or 130 hex digits, a PEM file, or PEM text")
    ap.add_argument("--receipt", metavar="FILE", help="verify a draw receipt (needs --pubkey)")
    ap.add_argument("--vectors", metavar="FILE", help="check the beacon test vector file")
    ap.add_argument("--draw-vectors", metavar="FILE", help="check the draw test vector file")
    ap.add_argument("file", nargs="?", metavar="FILE|-", help="pulse file, - for standard input")
    args = ap.parse_args()  # exits 2 on usage errors
    try:
        modes = [m for m in (args.vectors, args.draw_vectors, args.receipt, args.file) if m is not None]
        if len(modes) != 1:
            raise InputError("give exactly one of FILE, --receipt, --vectors, --draw-vectors")
        if args.vectors is not None or args.draw_vectors is not None:
            if args.pubkey is not None:
                raise InputError("--vectors and --draw-vectors take no --pubkey")
            return cmd_vectors(args.vectors) if args.vectors is not None else cmd_draw_vectors(args.draw_vectors)
        if args.receipt is not None:
            return cmd_receipt(args.receipt, args.pubkey)
        return cmd_verify(args.file, args.pubkey)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
