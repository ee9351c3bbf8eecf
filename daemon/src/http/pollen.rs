//! The pollen protocol (Ubuntu's `pollinate` client), so a stock client seeds a machine's pool
//! from a lokey device: `POST /` with the form body `challenge=<text>`; the answer is two lines
//! of lowercase hex, `SHA-512(challenge)` (the client checks it against its own) and
//! `SHA-512(challenge ‖ 64 random bytes)` (the client hashes the whole exchange into its
//! pool). `GET /` stays the status page.
//!
//! The 64 bytes come from Fortuna (seeded from the hardware). Over HTTPS with the device's
//! certificate (`api.tls`) the client can pin it: `CURL_OPTS="--cacert lokey.pem --capath
//! /dev/null"` in `/etc/default/pollinate`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha512};

use super::ApiError;
use crate::service::Service;

/// Longest challenge accepted, characters (the client sends 128 hex digits).
const MAX_CHALLENGE: usize = 256;

/// The pollen form body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes a request body")]
pub struct PollenForm {
    /// The client's challenge (pollinate: SHA-512 of 64 random bytes, in hex).
    #[schema(min_length = 1, max_length = 256)]
    pub challenge: String,
}

/// `POST /`: the pollen answer.
#[utoipa::path(post, path = "/", tag = "random",
    request_body(content = PollenForm, content_type = "application/x-www-form-urlencoded",
        description = "challenge=<text> (pollinate sends 128 hex digits)"),
    responses(
        (status = 200, description = "Two lines of hex: SHA-512(challenge), then SHA-512(challenge ‖ 64 random bytes)", body = String, content_type = "text/plain"),
        (status = 400, description = "No challenge", body = super::openapi::ErrorBody)))]
pub async fn answer(State(service): State<Service>, body: Bytes) -> Result<Response, ApiError> {
    let challenge = challenge(&body).ok_or_else(|| {
        ApiError::bad_request(
            "POST / is the pollen protocol: send the form body challenge=<text> \
             (use the pollinate client)",
        )
    })?;
    let random = service.fortuna_bytes(0, 64)?;
    let text = lines(challenge.as_bytes(), &random);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// The value of `challenge` in a form body (percent-decoded; `+` is a space), when present
/// and not empty.
fn challenge(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let value = text
        .split('&')
        .find_map(|pair| pair.strip_prefix("challenge="))?;
    let decoded = percent_decode(value)?;
    (!decoded.is_empty() && decoded.chars().count() <= MAX_CHALLENGE).then_some(decoded)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `hex(SHA-512(challenge))\nhex(SHA-512(challenge ‖ random))\n` (pollen's `"%x\n%x\n"`).
fn lines(challenge: &[u8], random: &[u8]) -> String {
    let mut hasher = Sha512::new();
    hasher.update(challenge);
    let first = hasher.clone().finalize();
    hasher.update(random);
    let second = hasher.finalize();
    format!(
        "{}\n{}\n",
        lokey::beacon::hex(&first),
        lokey::beacon::hex(&second)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pollen_test.go's vector: SHA-512("pork chop sandwiches").
    #[test]
    fn the_first_line_is_the_challenges_sha512() {
        let text = lines(b"pork chop sandwiches", &[0; 64]);
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("a75751ccd71ba00d"), "{first}");
        assert!(first.ends_with("c065e873"), "{first}");
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().all(|l| l.len() == 128));
    }

    #[test]
    fn the_second_line_depends_on_the_random_bytes() {
        let a = lines(b"x", &[0; 64]);
        let b = lines(b"x", &[1; 64]);
        assert_eq!(a.lines().next(), b.lines().next());
        assert_ne!(a.lines().nth(1), b.lines().nth(1));
    }

    #[test]
    fn challenges_are_read_from_form_bodies() {
        assert_eq!(challenge(b"challenge=abc").as_deref(), Some("abc"));
        assert_eq!(
            challenge(b"x=1&challenge=a%20b+c").as_deref(),
            Some("a b c")
        );
        assert_eq!(challenge(b"challenge="), None);
        assert_eq!(challenge(b"other=1"), None);
        assert_eq!(challenge(b"challenge=%zz"), None);
    }
}
