//! A strict JSON reader for untrusted webhook bodies: duplicate object keys are an error
//! (serde_json silently keeps the last), and the exact text of every non-integer or
//! out-of-range number is kept, keyed by JSON pointer, so typed fields can refuse numbers that
//! a binary float cannot hold exactly.

use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

const MAX_DEPTH: usize = 128;

/// A parsed body: the value and, per JSON pointer, the source text of numbers that are not
/// exact `i64`/`u64` integers.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictJson {
    pub value: Value,
    pub number_text: BTreeMap<String, String>,
}

/// Why a body is not strict JSON. The messages name the byte, key or number at fault, so the
/// sender can find and correct it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("body is not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    /// Not JSON at byte `at`; `what` says what was found or expected there.
    #[error("{what} at byte {at}")]
    Syntax { what: &'static str, at: usize },
    /// The same key twice in one object: which one was meant is ambiguous, so neither is taken.
    #[error("duplicate key `{key}` in object at `{object}`")]
    DuplicateKey { key: String, object: String },
    #[error("invalid number `{text}`")]
    InvalidNumber { text: String },
    /// Beyond what a binary float holds (it would become infinity).
    #[error("number `{text}` is out of range")]
    NumberOutOfRange { text: String },
}

pub fn parse_strict(bytes: &[u8]) -> Result<StrictJson, JsonError> {
    let text = std::str::from_utf8(bytes)?;
    let mut p = Parser { s: text.as_bytes(), src: text, i: 0, numbers: BTreeMap::new() };
    p.ws();
    let mut path = String::new();
    let value = p.value(&mut path, 0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(JsonError::Syntax { what: "trailing characters", at: p.i });
    }
    Ok(StrictJson { value, number_text: p.numbers })
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
    numbers: BTreeMap<String, String>,
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &'static str) -> Result<T, JsonError> {
        Err(JsonError::Syntax { what, at: self.i })
    }

    fn eat(&mut self, lit: &str) -> Result<(), JsonError> {
        if self.s.get(self.i..self.i + lit.len()) == Some(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    fn value(&mut self, path: &mut String, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        match self.s.get(self.i) {
            None => self.err("unexpected end of input"),
            Some(b'{') => {
                self.i += 1;
                let mut map = Map::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Value::Object(map));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return self.err("expected a string key");
                    }
                    let key = self.string()?;
                    if map.contains_key(&key) {
                        let object = if path.is_empty() { "/" } else { path.as_str() };
                        return Err(JsonError::DuplicateKey { key, object: object.to_owned() });
                    }
                    self.ws();
                    if self.s.get(self.i) != Some(&b':') {
                        return self.err("expected `:`");
                    }
                    self.i += 1;
                    self.ws();
                    let len = path.len();
                    path.push('/');
                    path.push_str(&escape_pointer(&key));
                    let v = self.value(path, depth + 1)?;
                    path.truncate(len);
                    map.insert(key, v);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::Object(map));
                        }
                        _ => return self.err("expected `,` or `}`"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut list = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Value::Array(list));
                }
                loop {
                    self.ws();
                    let len = path.len();
                    path.push('/');
                    path.push_str(&list.len().to_string());
                    let v = self.value(path, depth + 1)?;
                    path.truncate(len);
                    list.push(v);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Array(list));
                        }
                        _ => return self.err("expected `,` or `]`"),
                    }
                }
            }
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.eat("true").map(|()| Value::Bool(true)),
            Some(b'f') => self.eat("false").map(|()| Value::Bool(false)),
            Some(b'n') => self.eat("null").map(|()| Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(path),
            Some(_) => self.err("unexpected character"),
        }
    }

    fn number(&mut self, path: &str) -> Result<Value, JsonError> {
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        while let Some(b'0'..=b'9') = self.s.get(self.i) {
            self.i += 1;
        }
        if self.i == int_start || (self.s[int_start] == b'0' && self.i - int_start > 1) {
            return self.err("invalid number");
        }
        let mut integer = true;
        if self.s.get(self.i) == Some(&b'.') {
            integer = false;
            self.i += 1;
            let f = self.i;
            while let Some(b'0'..=b'9') = self.s.get(self.i) {
                self.i += 1;
            }
            if self.i == f {
                return self.err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.s.get(self.i) {
            integer = false;
            self.i += 1;
            if let Some(b'+' | b'-') = self.s.get(self.i) {
                self.i += 1;
            }
            let f = self.i;
            while let Some(b'0'..=b'9') = self.s.get(self.i) {
                self.i += 1;
            }
            if self.i == f {
                return self.err("invalid number");
            }
        }
        let text = &self.src[start..self.i];
        if integer {
            if let Ok(n) = text.parse::<i64>() {
                return Ok(Value::Number(n.into()));
            }
            if let Ok(n) = text.parse::<u64>() {
                return Ok(Value::Number(n.into()));
            }
        }
        self.numbers.insert(path.to_string(), text.to_string());
        let f: f64 = text.parse().map_err(|_| JsonError::InvalidNumber { text: text.to_owned() })?;
        Number::from_f64(f).map(Value::Number).ok_or_else(|| JsonError::NumberOutOfRange { text: text.to_owned() })
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let Some(h) = self.src.get(self.i..self.i + 4) else { return self.err("truncated \\u escape") };
        let Ok(v) = u32::from_str_radix(h, 16) else { return self.err("invalid \\u escape") };
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(&self.src[start..self.i]);
            match self.s.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(&c) = self.s.get(self.i) else { return self.err("unterminated escape") };
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return self.err("unpaired surrogate");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.err("unpaired surrogate");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            let Some(c) = char::from_u32(code) else { return self.err("invalid unicode escape") };
                            out.push(c);
                        }
                        _ => return self.err("invalid escape"),
                    }
                }
                Some(_) => return self.err("control character in string"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_serde_json() {
        let body = br#"{"a":[1,-2,3.5,"x\u00e9\ud83d\ude00\n",true,false,null],"b":{"c":{}},"d":[]}"#;
        let p = parse_strict(body).unwrap();
        assert_eq!(p.value, serde_json::from_slice::<Value>(body).unwrap());
        assert_eq!(p.number_text.get("/a/2").map(String::as_str), Some("3.5"));
    }

    #[test]
    fn rejects_duplicate_keys_and_garbage() {
        let e = parse_strict(br#"{"data":{"id":1,"id":2}}"#).unwrap_err();
        assert_eq!(e, JsonError::DuplicateKey { key: "id".into(), object: "/data".into() });
        assert_eq!(e.to_string(), "duplicate key `id` in object at `/data`");
        assert!(parse_strict(b"{").is_err());
        assert!(parse_strict(b"{\"a\":01}").is_err());
        assert!(parse_strict(b"[1,]").is_err());
        assert!(parse_strict(b"{} x").is_err());
        assert!(parse_strict(b"\"\\ud800\"").is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_strict(deep.as_bytes()).is_err());
    }

    #[test]
    fn keeps_big_number_text() {
        let p = parse_strict(br#"{"n":123456789012345678901234567890.5,"i":18446744073709551615}"#).unwrap();
        assert_eq!(p.number_text["/n"], "123456789012345678901234567890.5");
        assert!(!p.number_text.contains_key("/i"));
    }
}
