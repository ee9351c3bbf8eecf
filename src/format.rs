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

    /// Writes the values in `bytes` (a whole number of values) as a JSON array.
    /// `Binary` is written like `Uint8`.
    pub fn write_json(self, bytes: &[u8], out: &mut String) {
        use std::fmt::Write;
        out.push('[');
        for (i, v) in bytes.chunks_exact(self.width()).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut be = [0u8; 8];
            be[8 - v.len()..].copy_from_slice(v);
            let u = u64::from_be_bytes(be);
            // Writing to a String cannot fail.
            let _ = match self {
                Format::Int8 => write!(out, "{}", u as u8 as i8),
                Format::Int16 => write!(out, "{}", u as u16 as i16),
                Format::Int32 => write!(out, "{}", u as u32 as i32),
                Format::Int64 => write!(out, "{}", u as i64),
                _ => write!(out, "{u}"),
            };
        }
        out.push(']');
    }
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
        let mut s = String::new();
        f.write_json(bytes, &mut s);
        s
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
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for f in FORMATS {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
        }
        let err = "float".parse::<Format>().unwrap_err();
        assert!(err.to_string().contains("uint64, binary"));
    }
}
