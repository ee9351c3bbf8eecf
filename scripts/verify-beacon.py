#!/usr/bin/env python3
"""Independent verifier for lokey beacon pulses, format version 1.

Written from docs/beacon.md alone (and checked against docs/beacon-vectors.json),
without reading lokey's implementation, so that it can cross-check it.

Usage:
  verify-beacon.py [--pubkey KEY] FILE|-    verify a pulse file (docs/beacon.md §7, §8)
  verify-beacon.py --vectors FILE           check the test vector file

KEY is 128 hex digits (X||Y), 130 hex digits (04||X||Y), a path to a PEM file, or PEM
text. Without --pubkey the file's "publicKey" is used, with a warning: a key must be
pinned from a trusted source, never taken only from the file you were sent.

Exit status: 0 valid; 1 invalid (a pulse fails a numbered check of §8; a pulse with a
missing or malformed member fails check 1 or 2); 2 usage or input error (unreadable
file, malformed JSON, a file that is not one of the §7 forms, no key, bad key).
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
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

CHECKS = {
    1: "version is 1",
    2: "rebuild the message M",
    3: "outputValue = SHA-512(M)",
    4: "keyId = SHA-256(SubjectPublicKeyInfo of the key)",
    5: "signatureValue is a valid ECDSA P-256/SHA-256 signature of M",
    6: "first pulse: status bit 0x01 and previousOutputValue all zero",
    7: "b.pulseIndex = a.pulseIndex + 1",
    8: "b.previousOutputValue = a.outputValue",
    9: "a.precommitmentValue = SHA-512(b.localRandomValue)",
    10: "b.period = a.period and b.timeStamp >= a.timeStamp + a.period",
}

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


def verify_pulses(pulses, key):
    """Run the checks of §8. Returns (failures, stats); failures are (position, pulse, check, detail)."""
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
        status = p["statusCode"]
        if p["pulseIndex"] == 1 and (not status & STATUS_CHAIN_START or any(m[217:281])):
            fail(6, f"pulseIndex 1 with statusCode {status:#x} and previousOutputValue "
                    f"{'zero' if not any(m[217:281]) else 'not zero'}")
        good.append({"pos": pos, "p": p, "m": m, "output": output, "time": int.from_bytes(m[36:44], "big")})

    # Links: consecutive pulses of the same chain, in the order given.
    last = {}  # chainIndex -> previous pulse of that chain
    links = 0
    chains = set()
    for g in good:
        if g is None:
            continue
        a = last.get(g["p"]["chainIndex"])
        chains.add(g["p"]["chainIndex"])
        last[g["p"]["chainIndex"]] = g
        if a is None:
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
    failures.sort(key=lambda f: f[0])
    emulated = sum(1 for g in good if g and g["p"]["statusCode"] & STATUS_EMULATED)
    return failures, {"pulses": len(pulses), "links": links, "chains": sorted(chains), "emulated": emulated}


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
        return [d["pulse"] for d in docs], None
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
    return pulses, key


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
    return 0


# ---------------------------------------------------------------- test vectors

FAILS_CHECK = {"version": 1, "output": 3, "keyId": 4, "signature": 5}  # names used by the vectors


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
                check(expected is None or first == expected, what)
            else:
                check(False, what)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise InputError(f"malformed vector file: {type(e).__name__}: {e}") from None

    if problems:
        print(f"VECTORS INVALID: {len(problems)} problem(s)")
        return 1
    print("VECTORS OK")
    return 0


def main():
    ap = argparse.ArgumentParser(description="Verify lokey beacon pulses (format version 1, docs/beacon.md).")
    ap.add_argument("--pubkey", metavar="KEY", help="128 or 130 hex digits, a PEM file, or PEM text")
    ap.add_argument("--vectors", metavar="FILE", help="check a test vector file instead")
    ap.add_argument("file", nargs="?", metavar="FILE|-", help="pulse file, - for standard input")
    args = ap.parse_args()  # exits 2 on usage errors
    try:
        if args.vectors is not None:
            if args.file is not None or args.pubkey is not None:
                raise InputError("--vectors takes no other argument")
            return cmd_vectors(args.vectors)
        if args.file is None:
            raise InputError("no pulse file given")
        return cmd_verify(args.file, args.pubkey)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
