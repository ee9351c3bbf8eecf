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

#[cfg(test)]
mod tests {
    use super::*;

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
