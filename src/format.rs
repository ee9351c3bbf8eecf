//! The value formats of the Go project's `POST /api/v1/data`: `int8` … `uint64` and `binary`.
//!
//! Values are read from consecutive bytes in big-endian order; signed formats are the two's
//! complement reading of the same bits (`0x80` as `int8` is -128), exactly as the Go project
//! did. Unlike it, values may span the stored chunks (the caller passes one contiguous byte
//! string), so exactly the asked number of values can always be made from
//! `count × width` bytes.

use std::fmt;
use std::str::FromStr;

/// A value format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Signed 8-bit.
    Int8,
    /// Signed 16-bit.
    Int16,
    /// Signed 32-bit.
    Int32,
    /// Signed 64-bit.
    Int64,
    /// Unsigned 8-bit.
    Uint8,
    /// Unsigned 16-bit.
    Uint16,
    /// Unsigned 32-bit.
    Uint32,
    /// Unsigned 64-bit.
    Uint64,
    /// Raw bytes.
    Binary,
}

/// Every format, in the Go project's order.
pub const FORMATS: [Format; 9] = [
    Format::Int8,
    Format::Int16,
    Format::Int32,
    Format::Int64,
    Format::Uint8,
    Format::Uint16,
    Format::Uint32,
    Format::Uint64,
    Format::Binary,
];

/// The names of [`FORMATS`], for error messages.
pub const FORMAT_NAMES: &str = "int8, int16, int32, int64, uint8, uint16, uint32, uint64, binary";

impl Format {
    /// The format's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Format::Int8 => "int8",
            Format::Int16 => "int16",
            Format::Int32 => "int32",
            Format::Int64 => "int64",
            Format::Uint8 => "uint8",
            Format::Uint16 => "uint16",
            Format::Uint32 => "uint32",
            Format::Uint64 => "uint64",
            Format::Binary => "binary",
        }
    }

    /// Bytes per value.
    pub fn width(self) -> usize {
        match self {
            Format::Int8 | Format::Uint8 | Format::Binary => 1,
            Format::Int16 | Format::Uint16 => 2,
            Format::Int32 | Format::Uint32 => 4,
            Format::Int64 | Format::Uint64 => 8,
        }
    }

    /// Appends the values in `bytes` (a whole number of values) to `out` as a JSON array
    /// (ASCII). `Binary` is written like `Uint8`.
    ///
    /// Speed: this is most of the daemon's work for `POST /api/v1/data` with a JSON format.
    /// With `core::fmt` (`write!` per value) its formatter machinery took about 40% of the
    /// daemon's CPU time serving 1000 `uint32` values per request; with a digit buffer copied
    /// in by `push_str` the variable-length `memcpy` calls took 17%, and with the buffer copied
    /// whole, the 16-byte reload of freshly stored digits (a store-forwarding stall) half of
    /// this function. So the output is sized first for every value at full width, each value's
    /// length is computed up front (`ilog10`), its digits are stored straight into place two
    /// at a time, and the output is cut to the written length; the loop is compiled once per
    /// width.
    pub fn write_json(self, bytes: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        // Room for every value at full width (and the room the last one may use).
        let values = bytes.len() / self.width();
        out.resize(start + 1 + values * (MAX_DECIMAL + 1) + ROOM, 0);
        out[start] = b'[';
        let written = match self {
            Format::Int8 => write_values(&mut out[start + 1..], bytes, |b| {
                signed(i8::from_be_bytes(b).into())
            }),
            Format::Int16 => write_values(&mut out[start + 1..], bytes, |b| {
                signed(i16::from_be_bytes(b).into())
            }),
            Format::Int32 => write_values(&mut out[start + 1..], bytes, |b| {
                signed(i32::from_be_bytes(b).into())
            }),
            Format::Int64 => write_values(&mut out[start + 1..], bytes, |b| {
                signed(i64::from_be_bytes(b))
            }),
            Format::Uint8 | Format::Binary => {
                write_values(&mut out[start + 1..], bytes, |b: [u8; 1]| {
                    (false, u64::from(b[0]))
                })
            }
            Format::Uint16 => write_values(&mut out[start + 1..], bytes, |b| {
                (false, u16::from_be_bytes(b).into())
            }),
            Format::Uint32 => write_values(&mut out[start + 1..], bytes, |b| {
                (false, u32::from_be_bytes(b).into())
            }),
            Format::Uint64 => write_values(&mut out[start + 1..], bytes, |b| {
                (false, u64::from_be_bytes(b))
            }),
        };
        // `written` ends with a comma after the last value (none if there are no values):
        // the closing bracket takes its place.
        let end = start + 1 + written.saturating_sub(1);
        out.truncate(end);
        out.push(b']');
    }
}

/// The most characters of one value: "-9223372036854775808" and "18446744073709551615".
const MAX_DECIMAL: usize = 20;

/// The room one value may use while it is written: its characters and a comma, rounded up.
const ROOM: usize = 24;

/// "00", "01", … "99": two decimal digits per table lookup.
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// A signed value as (negative, magnitude).
fn signed(v: i64) -> (bool, u64) {
    (v < 0, v.unsigned_abs())
}

/// Writes each `N`-byte value of `bytes` in decimal, each followed by a comma, at the start of
/// `out` (which has room for every value at full width plus [`ROOM`] bytes); returns the
/// number of bytes written.
fn write_values<const N: usize>(
    out: &mut [u8],
    bytes: &[u8],
    read: impl Fn([u8; N]) -> (bool, u64),
) -> usize {
    let mut pos = 0;
    let (values, _) = bytes.as_chunks::<N>();
    for v in values {
        // Always there: `out` was sized for every value at full width.
        let Some(dst) = out[pos..].first_chunk_mut::<ROOM>() else {
            break;
        };
        let (negative, magnitude) = read(*v);
        pos += decimal(negative, magnitude, dst);
    }
    pos
}

/// Writes the value's decimal form and a comma at the start of `buf` (straight into the
/// output: the digits are stored once, as bytes and pairs, never reloaded); returns their
/// length.
#[inline(always)]
fn decimal(negative: bool, mut v: u64, buf: &mut [u8; ROOM]) -> usize {
    let sign = usize::from(negative);
    buf[0] = b'-'; // overwritten by the first digit when not negative
    let digits = v.checked_ilog10().unwrap_or(0) as usize + 1;
    let end = sign + digits;
    buf[end] = b',';
    let mut i = end;
    // Four digits per step: one division by 10 000 in the loop-carried chain, and the two
    // pairs of the group split off it independently.
    while v >= 10_000 {
        let group = (v % 10_000) as usize;
        v /= 10_000;
        let (high, low) = (group / 100 * 2, group % 100 * 2);
        i -= 4;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[high..high + 2]);
        buf[i + 2..i + 4].copy_from_slice(&DIGIT_PAIRS[low..low + 2]);
    }
    if v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        buf[i - 2..i].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        buf[i - 1] = b'0' + v as u8;
    }
    end + 1
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}: expected one of {FORMAT_NAMES}")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        FORMATS
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// Appends `bytes` as lowercase hexadecimal, two digits a byte.
pub fn hex_into(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// `bytes` as lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Bytes from hexadecimal (either case), or `None` for an odd length or another character.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends `bytes` as standard base64 with padding (RFC 4648 §4). Pieces whose lengths are
/// multiples of 3 (but the last) concatenate to one valid encoding.
pub fn base64_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= group.len() {
                BASE64[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            });
        }
    }
}

/// `bytes` as standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    base64_into(bytes, &mut out);
    String::from_utf8(out).expect("base64 is ASCII")
}

/// Bytes from standard base64 (padding optional), or `None` for another character.
pub fn from_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = BASE64.iter().position(|b| *b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex_match_rfc_4648_vectors() {
        for (raw, b64, hx) in [
            ("", "", ""),
            ("f", "Zg==", "66"),
            ("fo", "Zm8=", "666f"),
            ("foo", "Zm9v", "666f6f"),
            ("foob", "Zm9vYg==", "666f6f62"),
            ("fooba", "Zm9vYmE=", "666f6f6261"),
            ("foobar", "Zm9vYmFy", "666f6f626172"),
        ] {
            assert_eq!(base64(raw.as_bytes()), b64);
            assert_eq!(from_base64(b64).unwrap(), raw.as_bytes());
            assert_eq!(hex(raw.as_bytes()), hx);
            assert_eq!(from_hex(hx).unwrap(), raw.as_bytes());
        }
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(from_hex("0F"), Some(vec![15]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_base64("Zm9v!"), None);
    }

    fn json(f: Format, bytes: &[u8]) -> String {
        let mut s = b"before".to_vec();
        f.write_json(bytes, &mut s);
        let s = String::from_utf8(s).unwrap();
        s.strip_prefix("before").unwrap().to_string()
    }

    #[test]
    fn big_endian_twos_complement_as_the_go_project() {
        // The Go README's example shape: int16 from 0xF433 0x4400 0x00FF 0xFFFF.
        let b = [0xf4, 0x33, 0x44, 0x00, 0x00, 0xff, 0xff, 0xff];
        assert_eq!(json(Format::Int16, &b), "[-3021,17408,255,-1]");
        assert_eq!(json(Format::Uint16, &b), "[62515,17408,255,65535]");
        assert_eq!(json(Format::Int8, &[0x80, 0x7f]), "[-128,127]");
        assert_eq!(json(Format::Uint64, &[0xff; 8]), "[18446744073709551615]");
        assert_eq!(json(Format::Int64, &[0xff; 8]), "[-1]");
        assert_eq!(
            json(Format::Int32, &[0x80, 0, 0, 0, 0, 0, 0, 1]),
            "[-2147483648,1]"
        );
        assert_eq!(json(Format::Binary, &[]), "[]");
    }

    #[test]
    fn every_format_matches_std_formatting_including_the_extremes() {
        // Bytes with each width's minimum and maximum (signed and unsigned) and mixed values.
        let mut bytes = vec![
            0x80, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        bytes.extend([0xff; 8]);
        bytes.extend((0u8..=255).map(|i| i.wrapping_mul(97)));
        bytes.truncate(bytes.len() / 8 * 8);
        for f in FORMATS {
            let expected: Vec<String> = bytes
                .chunks_exact(f.width())
                .map(|v| {
                    let mut be = [0u8; 8];
                    be[8 - v.len()..].copy_from_slice(v);
                    let u = u64::from_be_bytes(be);
                    match f {
                        Format::Int8 => (u as u8 as i8).to_string(),
                        Format::Int16 => (u as u16 as i16).to_string(),
                        Format::Int32 => (u as u32 as i32).to_string(),
                        Format::Int64 => (u as i64).to_string(),
                        _ => u.to_string(),
                    }
                })
                .collect();
            assert_eq!(json(f, &bytes), format!("[{}]", expected.join(",")), "{f}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for f in FORMATS {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
        }
        let err = "float".parse::<Format>().unwrap_err();
        assert!(err.to_string().contains("uint64, binary"));
    }
}
