//! The protocol spoken over `lokeyd`'s Unix socket, shared by the daemon and the CLI.
//!
//! # Wire format (version 1)
//!
//! Every message is one frame:
//!
//! ```text
//! +----------------+---------+--------+----------------------+
//! | length: u32 BE | version | kind   | body (length-2 bytes) |
//! +----------------+---------+--------+----------------------+
//! ```
//!
//! `length` counts the bytes after itself (version, kind and body) and is at most
//! [`MAX_FRAME_LEN`]. `version` is [`VERSION`]. The kinds are:
//!
//! | kind | name       | body                                   | sent by |
//! |------|------------|----------------------------------------|---------|
//! | 0x01 | `Request`  | a [`Request`] as JSON                  | client  |
//! | 0x02 | `Response` | the answer as JSON                     | daemon  |
//! | 0x03 | `Data`     | raw bytes of a stream                  | daemon  |
//! | 0x04 | `End`      | u64 BE: bytes streamed in total        | daemon  |
//! | 0x05 | `Error`    | u16 BE [`ErrorCode`], UTF-8 message    | daemon  |
//! | 0x06 | `Ring`     | u32 BE slots, u32 BE slot length; a file descriptor beside it | daemon |
//! | 0x07 | `Filled`   | u32 BE slot, u32 BE length             | daemon  |
//! | 0x08 | `Release`  | u32 BE slot                            | client  |
//!
//! A connection carries requests one after another. A request is answered by one `Response`,
//! one `Error`, or (for streams) `Data` frames followed by `End` or `Error`. A client stops an
//! endless stream by closing the connection; the daemon writes `Data` only as fast as the client
//! reads (the socket buffer is the only buffer), so nothing large is ever held in memory.
//!
//! # Streams through shared memory
//!
//! A `bytes` request with `"shared": true` asks for the stream through a ring of shared memory
//! instead of `Data` frames, so that the bytes are not copied through the socket (twice: into
//! the kernel and out of it). The daemon may decline by answering with `Data` frames as usual.
//! If it accepts, its first frame is `Ring`, sent with one file descriptor as `SCM_RIGHTS`
//! ancillary data (unix(7)): a memfd of at least `slots × slot length` bytes, opened read-only
//! and sealed against shrinking and growing (memfd_create(2), `F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_SEAL`), which the client maps read-only. Slot `i` is the bytes at `i × slot length`.
//! Each `Filled` frame says that slot's first `length` bytes are the stream's next bytes; the
//! slot is the client's until it sends `Release` for it, and slots are filled and released in
//! the same round-robin order (`0, 1, …, slots − 1, 0, …`), so at most `slots` are filled and
//! unreleased at once. The daemon writes a slot only after its release, and sends `End` (or a
//! stream's `Error`) only when every filled slot has been released: the stream ends with
//! nothing in flight, and the connection takes the next request. A `Release` of any other slot
//! than the oldest unreleased one is a protocol error (`Malformed`; the connection is closed).
//! A client that releases nothing for the daemon's write timeout is given up like one that
//! stops reading `Data`.
//!
//! A frame that is too long, of an unknown version or kind, or malformed, and one cut short by
//! the end of the connection, is answered with an `Error` frame and the connection is closed.
//! So is a frame that does not arrive whole within a time limit of its first byte (`TimedOut`;
//! the daemon's is 10 s; a connection may stay idle between frames), and a connection beyond
//! the daemon's limit of concurrent connections (`Busy`). Error codes are stable: new codes may
//! be added, existing ones never change meaning.
//!
//! The codec here does no I/O: [`Frame::decode`] takes what has been read so far and says
//! whether a whole frame is there (check, then parse, as in mini-redis), and
//! [`Frame::encode`] appends a frame to a buffer. Both sides wrap it in their own I/O.

use serde::{Deserialize, Serialize};

/// Protocol version carried in every frame.
pub const VERSION: u8 = 1;
/// Largest `length` a frame may declare: a data chunk of 1 MiB plus header room.
pub const MAX_FRAME_LEN: u32 = (1 << 20) + 64;
/// Largest request body the daemon accepts (requests are small JSON documents).
pub const MAX_REQUEST_LEN: u32 = 64 * 1024;
/// Size of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Stable error codes of `Error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame could not be decoded (unknown kind, bad JSON, truncated body).
    Malformed = 1,
    /// The frame's version is not one the daemon speaks.
    UnsupportedVersion = 2,
    /// The frame is longer than allowed.
    TooLarge = 3,
    /// A request parameter is invalid; the message names it.
    InvalidArgument = 4,
    /// Not enough data is available now (e.g. the TRNG queue holds too few bytes).
    Unavailable = 5,
    /// The caller may not do this (configuration changes need root or the daemon's user).
    PermissionDenied = 6,
    /// The request is valid but this daemon cannot do it (e.g. a fault switch without emulator).
    Unsupported = 7,
    /// The daemon is shutting down.
    ShuttingDown = 8,
    /// Something failed inside the daemon; its log says what.
    Internal = 9,
    /// A frame did not arrive whole in time after its first byte.
    TimedOut = 10,
    /// The daemon serves as many connections as it allows; try again later.
    Busy = 11,
    /// What was asked for does not exist (a beacon pulse or chain).
    NotFound = 12,
    /// A code this client does not know (from a newer daemon).
    Unknown = 0xFFFF,
}

impl ErrorCode {
    /// The code for a number off the wire.
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::TooLarge,
            4 => ErrorCode::InvalidArgument,
            5 => ErrorCode::Unavailable,
            6 => ErrorCode::PermissionDenied,
            7 => ErrorCode::Unsupported,
            8 => ErrorCode::ShuttingDown,
            9 => ErrorCode::Internal,
            10 => ErrorCode::TimedOut,
            11 => ErrorCode::Busy,
            12 => ErrorCode::NotFound,
            _ => ErrorCode::Unknown,
        }
    }
}

/// A request from the CLI (or any client) to the daemon.
///
/// On the wire a request is a JSON object whose `verb` names the variant, e.g.
/// `{"verb":"bytes","source":"fortuna","count":32}`. Clients compute integers, UUIDs,
/// passwords, shuffles and the like themselves ([`crate::generate`]) from a `bytes` stream,
/// so the daemon serves randomness and answers questions, and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The daemon's status (the same document as REST `GET /api/v1/status`).
    Status,
    /// The daemon's health (the same document as REST `GET /api/v1/health`).
    Health,
    /// A stream of random bytes: `Data` frames, then `End` with the total, or `Error`.
    /// Without `count` the stream is endless; the client ends it by closing the connection.
    /// `trng` bytes are consumed from the durable queue before they are sent; when the queue
    /// holds fewer than `count` bytes the answer is an `Unavailable` error and nothing is
    /// consumed.
    Bytes {
        /// `trng` (raw hardware data) or `fortuna`.
        source: DataSource,
        /// How many bytes; `None` for an endless stream (`fortuna` only).
        #[serde(default)]
        count: Option<u64>,
        /// Through shared memory (`Ring` and `Filled` frames) rather than `Data` frames, if the
        /// daemon can; left out of the JSON when false, so that older daemons understand it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        shared: bool,
    },
    /// Configuration values: all of the live ones, or one key (`store.trng_queue_size`);
    /// answers `{"key": value, …}`.
    ConfigGet {
        /// A key from `lokeyd.toml(5)`, or `None` for every key that can change at run time.
        #[serde(default)]
        key: Option<String>,
    },
    /// Changes a configuration value at run time and persists it (root or the daemon's user
    /// only); answers `{"key": new value}`.
    ConfigSet {
        /// The key.
        key: String,
        /// The new value, as JSON (`100000`, `true`, `"debug"`).
        value: serde_json::Value,
    },
    /// What the chip is: `{"emulated", "revision", "serial", "config_locked", "data_locked",
    /// "bus", "address"}`.
    DeviceInfo,
    /// Locks the chip's configuration zone: irreversible (root or the daemon's user only).
    /// `confirm` must be the chip's serial number in hex, as `DeviceInfo` shows it, so that a
    /// script cannot lock a chip by accident.
    DeviceLock {
        /// The serial number of the chip to lock.
        confirm: String,
    },
    /// The chip's signing key: `{"serialNumber", "slot", "publicKey", "publicKeyPem",
    /// "keyId", "pin", "emulated"}` (as REST `GET /api/v1/identity`).
    Identity,
    /// Creates a new key in the beacon's slot (or with `tls`, the TLS key's `api.tls_slot`),
    /// destroying the old one (root or the daemon's user only). `confirm` must be the chip's
    /// serial number in hex. Answers as `Identity`.
    DeviceKeygen {
        /// The serial number of the chip.
        confirm: String,
        /// The TLS key's slot rather than the beacon's.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tls: bool,
    },
    /// A certificate signing request for the chip's TLS key, signed by the chip: answers
    /// `{"pem", "slot", "pin", "names"}`.
    DeviceCsr {
        /// subjectAltName entries (DNS names or IP addresses); empty for `api.tls_names`.
        #[serde(default)]
        names: Vec<String>,
        /// The subject's common name; the first name when absent.
        #[serde(default)]
        common_name: Option<String>,
    },
    /// A beacon pulse, `{"pulse": …}`: the newest when neither is given; pulse `pulse` of
    /// `chain` when both are; with only `pulse`, that index in the newest pulse's chain.
    BeaconPulse {
        /// Chain index.
        #[serde(default)]
        chain: Option<u64>,
        /// Pulse index.
        #[serde(default)]
        pulse: Option<u64>,
    },
    /// Up to `count` (1–1000) pulses of `chain` from index `from`, as a pulse file:
    /// `{"publicKey", "keyId", "pulses": [{"pulse": …}, …]}`.
    BeaconRun {
        /// Chain index.
        chain: u64,
        /// First pulse index.
        from: u64,
        /// Most pulses.
        count: u32,
    },
    /// Registers a draw (`docs/draws.md`): `body` is what `POST /api/v1/draws` takes; answers
    /// `{"id", "leaf", "chainIndex", "commitPulseIndex", "pulseIndex", "status"}`.
    DrawRegister {
        /// The registration.
        body: serde_json::Value,
    },
    /// A draw by id: pending, decided (values and receipt) or undecidable.
    Draw {
        /// The id the registration answered.
        id: String,
    },
    /// Changes the chip's 7-bit I2C address (config byte 16): possible only before its
    /// config zone is locked, and then permanent once it is (root or the daemon's user only).
    /// `confirm` is its serial number, as for `DeviceLock`.
    DeviceSetAddress {
        /// The new 7-bit address (0x08–0x77).
        address: u8,
        /// The serial number of the chip.
        confirm: String,
    },
    /// Turns an emulator fault on or off (root or the daemon's user only); answers
    /// `{"active": [names]}`.
    Fault {
        /// The fault's name (see `lokeyd(8)`).
        name: String,
        /// On or off.
        active: bool,
    },
}

/// Where random data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// Raw, health-tested hardware random data from the durable queue; each byte is served
    /// once.
    Trng,
    /// Output of the Fortuna CSPRNG seeded from the hardware.
    Fortuna,
}

impl DataSource {
    /// The source's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DataSource::Trng => "trng",
            DataSource::Fortuna => "fortuna",
        }
    }
}

impl std::str::FromStr for DataSource {
    type Err = String;
    fn from_str(s: &str) -> Result<DataSource, String> {
        match s {
            "trng" => Ok(DataSource::Trng),
            "fortuna" => Ok(DataSource::Fortuna),
            other => Err(format!(
                "unknown source {other:?}: expected trng or fortuna"
            )),
        }
    }
}

/// The most bytes one `Data` frame carries.
pub const MAX_DATA_CHUNK: usize = 256 * 1024;

/// One frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A request (client to daemon).
    Request(Request),
    /// A successful answer, as JSON.
    Response(serde_json::Value),
    /// A chunk of a byte stream.
    Data(Vec<u8>),
    /// The end of a byte stream, with the number of bytes sent.
    End(u64),
    /// A failed request.
    Error {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
    },
    /// The shared-memory ring of a stream; its file descriptor travels beside the frame.
    Ring {
        /// How many slots.
        slots: u32,
        /// Bytes per slot.
        slot_len: u32,
    },
    /// A slot of the ring holds the stream's next `len` bytes.
    Filled {
        /// Which slot.
        slot: u32,
        /// How many bytes, from the slot's start.
        len: u32,
    },
    /// The client is done with a slot (client to daemon).
    Release {
        /// Which slot.
        slot: u32,
    },
}

const KIND_REQUEST: u8 = 0x01;
const KIND_RESPONSE: u8 = 0x02;
/// The kind byte of a `Data` frame (for readers that take its body without decoding).
pub const KIND_DATA: u8 = 0x03;
const KIND_END: u8 = 0x04;
const KIND_ERROR: u8 = 0x05;
const KIND_RING: u8 = 0x06;
const KIND_FILLED: u8 = 0x07;
const KIND_RELEASE: u8 = 0x08;

/// Why bytes could not be decoded as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The frame declares more bytes than allowed.
    #[error("frame of {len} bytes is longer than the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: u32,
        /// Allowed length.
        max: u32,
    },
    /// The frame is of another protocol version.
    #[error("protocol version {0} is not supported (this side speaks version {VERSION})")]
    Version(u8),
    /// The frame's content is invalid.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl Error {
    /// The error code to answer this decoding error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::Version(_) => ErrorCode::UnsupportedVersion,
            Error::Malformed(_) => ErrorCode::Malformed,
        }
    }
}

impl Frame {
    /// Appends this frame, length prefix included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; LENGTH_PREFIX]);
        out.push(VERSION);
        match self {
            Frame::Request(req) => {
                out.push(KIND_REQUEST);
                // Serializing our own enum into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, req);
            }
            Frame::Response(value) => {
                out.push(KIND_RESPONSE);
                let _ = serde_json::to_writer(&mut *out, value);
            }
            Frame::Data(bytes) => {
                out.push(KIND_DATA);
                out.extend_from_slice(bytes);
            }
            Frame::End(total) => {
                out.push(KIND_END);
                out.extend_from_slice(&total.to_be_bytes());
            }
            Frame::Error { code, message } => {
                out.push(KIND_ERROR);
                out.extend_from_slice(&(*code as u16).to_be_bytes());
                out.extend_from_slice(message.as_bytes());
            }
            Frame::Ring { slots, slot_len } => {
                out.push(KIND_RING);
                out.extend_from_slice(&slots.to_be_bytes());
                out.extend_from_slice(&slot_len.to_be_bytes());
            }
            Frame::Filled { slot, len } => {
                out.push(KIND_FILLED);
                out.extend_from_slice(&slot.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
            }
            Frame::Release { slot } => {
                out.push(KIND_RELEASE);
                out.extend_from_slice(&slot.to_be_bytes());
            }
        }
        let len = u32::try_from(out.len() - start - LENGTH_PREFIX).unwrap_or(u32::MAX);
        out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    }

    /// Encodes a data frame header for `len` payload bytes (so a stream can write the payload
    /// from its own buffer without copying it into a frame).
    pub fn data_header(len: usize) -> [u8; LENGTH_PREFIX + 2] {
        let total = u32::try_from(len + 2).unwrap_or(u32::MAX).to_be_bytes();
        [total[0], total[1], total[2], total[3], VERSION, KIND_DATA]
    }

    /// Reads the length prefix of a frame that starts `buf` and checks it against `max`.
    /// `Ok(None)` means more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when the frame declares more than `max` bytes.
    pub fn check(buf: &[u8], max: u32) -> Result<Option<usize>, Error> {
        let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len > max {
            return Err(Error::TooLarge { len, max });
        }
        let total = LENGTH_PREFIX + len as usize;
        Ok((buf.len() >= total).then_some(total))
    }

    /// Decodes the frame at the start of `buf`, returning it and the bytes it used, or
    /// `Ok(None)` when `buf` does not yet hold a whole frame.
    ///
    /// # Errors
    ///
    /// [`Error`] when the frame is too large (checked before the body arrives), of another
    /// version, of an unknown kind, or its body is invalid.
    pub fn decode(buf: &[u8], max: u32) -> Result<Option<(Frame, usize)>, Error> {
        let Some(total) = Frame::check(buf, max)? else {
            return Ok(None);
        };
        let payload = &buf[LENGTH_PREFIX..total];
        let [version, kind, body @ ..] = payload else {
            return Err(Error::Malformed("frame shorter than its header".into()));
        };
        if *version != VERSION {
            return Err(Error::Version(*version));
        }
        let malformed = |e: &dyn std::fmt::Display| Error::Malformed(e.to_string());
        let frame = match *kind {
            KIND_REQUEST => Frame::Request(parse_request(body)?),
            KIND_RESPONSE => {
                Frame::Response(serde_json::from_slice(body).map_err(|e| malformed(&e))?)
            }
            KIND_DATA => Frame::Data(body.to_vec()),
            KIND_END => {
                let total: [u8; 8] = body
                    .try_into()
                    .map_err(|_| Error::Malformed("end frame body is not 8 bytes".into()))?;
                Frame::End(u64::from_be_bytes(total))
            }
            KIND_ERROR => {
                let Some((code, message)) = body.split_first_chunk::<2>() else {
                    return Err(Error::Malformed("error frame without a code".into()));
                };
                Frame::Error {
                    code: ErrorCode::from_u16(u16::from_be_bytes(*code)),
                    message: String::from_utf8_lossy(message).into_owned(),
                }
            }
            KIND_RING => {
                let [slots, slot_len] = words(body, "ring")?;
                Frame::Ring { slots, slot_len }
            }
            KIND_FILLED => {
                let [slot, len] = words(body, "filled")?;
                Frame::Filled { slot, len }
            }
            KIND_RELEASE => {
                let [slot] = words(body, "release")?;
                Frame::Release { slot }
            }
            other => {
                return Err(Error::Malformed(format!(
                    "unknown frame kind 0x{other:02x}"
                )));
            }
        };
        Ok(Some((frame, total)))
    }
}

/// A body of exactly `N` big-endian u32 words.
fn words<const N: usize>(body: &[u8], kind: &str) -> Result<[u32; N], Error> {
    if body.len() != 4 * N {
        return Err(Error::Malformed(format!(
            "{kind} frame body is {} bytes, not {}",
            body.len(),
            4 * N
        )));
    }
    let mut out = [0u32; N];
    for (word, bytes) in out.iter_mut().zip(body.chunks_exact(4)) {
        *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    Ok(out)
}

/// A request's JSON. `deny_unknown_fields` does not reach the verbs without fields (`status`,
/// `health`, `device_info`, `identity`), so for those any other field is refused here: every request is
/// validated, and a parameter the daemon would ignore is an error.
fn parse_request(body: &[u8]) -> Result<Request, Error> {
    let malformed = |e: serde_json::Error| Error::Malformed(e.to_string());
    let request: Request = serde_json::from_slice(body).map_err(malformed)?;
    if matches!(
        request,
        Request::Status | Request::Health | Request::DeviceInfo | Request::Identity
    ) {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(malformed)?;
        if let Some((verb, extra)) = value
            .as_object()
            .and_then(|o| Some((o.get("verb")?, o.keys().find(|k| *k != "verb")?)))
        {
            return Err(Error::Malformed(format!(
                "unknown field `{extra}`: verb {verb} takes no parameters"
            )));
        }
    }
    Ok(request)
}
