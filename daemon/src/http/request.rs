//! Reading REST request bodies so that every error names the field and what is allowed.
//!
//! Bodies are parsed as a JSON object first and then field by field, so that a wrong type
//! says which field (serde's own messages only give a line and column). Unknown fields are
//! ignored, as the Go project's clients expect (its README sends `chunk_size`).

use serde_json::{Map, Value};

/// A JSON object body, or the error to send.
///
/// # Errors
///
/// A message for malformed JSON or a body that is not an object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("the request body is empty: send a JSON object".into());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the request body must be a JSON object".into()),
        Err(e) => Err(format!("the request body is not valid JSON: {e}")),
    }
}

/// A required string field that must be one of `choices`.
///
/// # Errors
///
/// A message naming the field and the choices.
pub fn choice<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    choices: &[&str],
) -> Result<&'a str, String> {
    let list = choices.join(", ");
    match map.get(field) {
        None | Some(Value::Null) => Err(format!("field `{field}` is required: one of {list}")),
        Some(Value::String(s)) if choices.contains(&s.as_str()) => Ok(s),
        Some(Value::String(s)) => Err(format!("field `{field}`: {s:?} is not one of {list}")),
        Some(other) => Err(format!(
            "field `{field}` must be a string, one of {list}; got {other}"
        )),
    }
}

/// An integer field in `min..=max`; `default` when absent (`None` makes it required).
///
/// # Errors
///
/// A message naming the field and the range.
pub fn integer(
    map: &Map<String, Value>,
    field: &str,
    min: i64,
    max: i64,
    default: Option<i64>,
) -> Result<i64, String> {
    let range = format!("an integer from {min} to {max}");
    match map.get(field) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| format!("field `{field}` is required: {range}"))
        }
        // JSON does not tell 10 from 10.0 (nor does JSON Schema's "integer"); a fraction is
        // still refused.
        Some(Value::Number(n)) => match n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0)
                .map(|f| f as i64)
        }) {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(format!("field `{field}`: {n} is out of range: {range}")),
        },
        Some(other) => Err(format!("field `{field}` must be {range}; got {other}")),
    }
}

/// A required boolean field.
///
/// # Errors
///
/// A message naming the field.
pub fn boolean(map: &Map<String, Value>, field: &str) -> Result<bool, String> {
    match map.get(field) {
        Some(Value::Bool(b)) => Ok(*b),
        None | Some(Value::Null) => Err(format!("field `{field}` is required: true or false")),
        Some(other) => Err(format!(
            "field `{field}` must be true or false; got {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: &str) -> Map<String, Value> {
        object(json.as_bytes()).unwrap()
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(object(b"").unwrap_err().contains("empty"));
        assert!(object(b"{").unwrap_err().contains("not valid JSON"));
        assert!(object(b"[1]").unwrap_err().contains("JSON object"));
        assert!(
            object(br#"{"chunk_size": 5}"#).is_ok(),
            "unknown fields are fine"
        );
    }

    #[test]
    fn every_error_names_the_field_and_what_is_allowed() {
        let m = map(r#"{"format":"float","limit":"ten","source":7,"consume":"yes"}"#);
        let e = choice(&m, "format", &["int8", "binary"]).unwrap_err();
        assert!(e.contains("`format`") && e.contains("int8, binary"), "{e}");
        let e = integer(&m, "limit", 1, 100_000, None).unwrap_err();
        assert!(e.contains("`limit`") && e.contains("1 to 100000"), "{e}");
        let e = choice(&m, "source", &["trng", "fortuna"]).unwrap_err();
        assert!(e.contains("must be a string"), "{e}");
        let e = boolean(&m, "consume").unwrap_err();
        assert!(e.contains("`consume`"), "{e}");
        let e = integer(&map(r#"{"limit":0}"#), "limit", 1, 10, None).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = integer(&map("{}"), "limit", 1, 10, None).unwrap_err();
        assert!(e.contains("required"), "{e}");
        assert_eq!(integer(&map("{}"), "offset", 0, 10, Some(0)), Ok(0));
        assert!(integer(&map(r#"{"limit":1.5}"#), "limit", 1, 10, None).is_err());
    }
}
