//! The recorded history: one [`Operation`] per client call, and its JSON form.
//!
//! A history file is a plain JSON array of operation objects (schema in
//! `specs/history.md`). Parsing is strict on purpose: unknown fields and a
//! missing `"return"` are errors rather than silently becoming defaults,
//! because a misspelt `"retrun"` read as "never returned" would make the
//! checker *more* permissive and hide a bug. Every malformed input becomes a
//! [`HistoryError`]; nothing in here panics on untrusted text.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Which key/value operation a client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Replace the key's value with `value`.
    Put,
    /// Append `value` to the key's value (a missing key counts as `""`).
    Append,
    /// Read the key's value into `output` (`""` for a missing key).
    Get,
    /// Remove the key; `output` is `"1"` if it held a non-empty value,
    /// else `"0"` (a missing key and `""` are the same value).
    Delete,
    /// Set the key to `value` if its value is `""` (missing); `output` is
    /// `"1"` if it did, else `"0"` (and nothing changed).
    PutIfAbsent,
}

impl OpKind {
    /// Whether a completed call's `output` says something the checker must
    /// match (a Get's value, a Delete's or PutIfAbsent's `"1"`/`"0"`); Put
    /// and Append return nothing.
    pub fn has_output(self) -> bool {
        matches!(self, OpKind::Get | OpKind::Delete | OpKind::PutIfAbsent)
    }

    /// Whether what the call does depends on the value it meets (Delete and
    /// PutIfAbsent report whether the key was empty). The checker's
    /// append-aware search assumes no write does; keys with such calls are
    /// checked by the general search.
    pub fn is_conditional(self) -> bool {
        matches!(self, OpKind::Delete | OpKind::PutIfAbsent)
    }
}

/// One client call, from the moment it was issued (`call`) to the moment the
/// client saw its result (`ret`), in virtual time.
///
/// The interval is closed: the operation may have taken effect at any instant
/// `t` with `call <= t <= ret`. Operation A *precedes* B iff `A.ret < B.call`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Which client issued the call (informational: the checker uses only the
    /// times, so one client may even have overlapping calls).
    pub client: u64,
    /// Put, Append, Get, Delete or PutIfAbsent.
    pub kind: OpKind,
    /// The key operated on.
    pub key: String,
    /// The Put/Append/PutIfAbsent argument; `""` (ignored) for a Get or
    /// Delete.
    pub value: String,
    /// What a Get returned, or a Delete's or PutIfAbsent's `"1"`/`"0"`;
    /// `""` (ignored) for Put and Append and for calls that never returned.
    pub output: String,
    /// Virtual time at which the client issued the call.
    pub call: u64,
    /// Virtual time at which the client saw the result, or `None` if it never
    /// did (timed out, gave up, crashed). Required in JSON, possibly `null`.
    #[serde(rename = "return", deserialize_with = "required_nullable")]
    pub ret: Option<u64>,
}

/// Serde treats a missing `Option` field as `None`; routing the field through
/// a `deserialize_with` function makes it required (while `null` still
/// deserialises to `None`).
fn required_nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)
}

impl Operation {
    /// A `Put(key, value)` call over `[call, ret]`.
    pub fn put(client: u64, key: &str, value: &str, call: u64, ret: Option<u64>) -> Self {
        Self::new(client, OpKind::Put, key, value, "", call, ret)
    }

    /// An `Append(key, value)` call over `[call, ret]`.
    pub fn append(client: u64, key: &str, value: &str, call: u64, ret: Option<u64>) -> Self {
        Self::new(client, OpKind::Append, key, value, "", call, ret)
    }

    /// A `Get(key)` call over `[call, ret]` that returned `output`.
    pub fn get(client: u64, key: &str, output: &str, call: u64, ret: Option<u64>) -> Self {
        Self::new(client, OpKind::Get, key, "", output, call, ret)
    }

    /// A `Delete(key)` call over `[call, ret]` that returned `output`
    /// (`"1"`: the key held a value; `"0"`: it did not).
    pub fn delete(client: u64, key: &str, output: &str, call: u64, ret: Option<u64>) -> Self {
        Self::new(client, OpKind::Delete, key, "", output, call, ret)
    }

    /// A `PutIfAbsent(key, value)` call over `[call, ret]` that returned
    /// `output` (`"1"`: it set the value; `"0"`: the key held one).
    pub fn put_if_absent(client: u64, key: &str, value: &str, output: &str, call: u64, ret: Option<u64>) -> Self {
        Self::new(client, OpKind::PutIfAbsent, key, value, output, call, ret)
    }

    /// A call of any kind (`value` and `output` as the fields say).
    pub fn new(client: u64, kind: OpKind, key: &str, value: &str, output: &str, call: u64, ret: Option<u64>) -> Self {
        Operation { client, kind, key: key.to_owned(), value: value.to_owned(), output: output.to_owned(), call, ret }
    }

    /// The sequential specification, once for every checker: this call
    /// applied to the key's value `before` (`""` when missing) gives the
    /// value after it and the output it returns. (The service's state
    /// machine, `kv::KvMachine`, implements the same rules.)
    pub fn step(&self, before: &str) -> (String, String) {
        let flag = |done: bool| if done { "1" } else { "0" }.to_owned();
        match self.kind {
            OpKind::Put => (self.value.clone(), String::new()),
            OpKind::Append => (format!("{before}{}", self.value), String::new()),
            OpKind::Get => (before.to_owned(), before.to_owned()),
            OpKind::Delete => (String::new(), flag(!before.is_empty())),
            OpKind::PutIfAbsent if before.is_empty() => (self.value.clone(), flag(true)),
            OpKind::PutIfAbsent => (before.to_owned(), flag(false)),
        }
    }

    /// Whether returning `output` is consistent with what was recorded: a
    /// call that returned must have returned its recorded output, if its
    /// kind has one; a call that never returned told nobody anything.
    pub fn output_matches(&self, output: &str) -> bool {
        !self.kind.has_output() || self.ret.is_none() || self.output == output
    }

    /// This call at instant 0 (returning at 0 if it returned at all), so
    /// that it overlaps every other such call: a set of them is
    /// linearizable iff their values fit together in some order, whatever
    /// real time said. How the minimiser tells a violation of order from a
    /// read of a value nothing wrote (`specs/history.md`, section 7).
    pub fn timeless(&self) -> Operation {
        Operation { call: 0, ret: self.ret.map(|_| 0), ..self.clone() }
    }

    /// True if the call never returned.
    pub fn is_pending(&self) -> bool {
        self.ret.is_none()
    }

    /// True if `self` finished strictly before `other` was called, so any
    /// linearization must order `self` first.
    pub fn precedes(&self, other: &Operation) -> bool {
        matches!(self.ret, Some(r) if r < other.call)
    }
}

/// A whole recorded history. Order of `ops` carries no meaning for the
/// checker (only the times do); it is preserved for reporting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct History {
    /// All recorded calls, on every key.
    pub ops: Vec<Operation>,
}

/// Why a history could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// The text is not a JSON array of well-formed operation objects
    /// (serde_json's message, which includes line and column).
    Json(String),
    /// Operation number `index` (0-based) returned before it was called.
    ReturnBeforeCall {
        /// Position of the offending operation in the array.
        index: usize,
        /// Its `call` time.
        call: u64,
        /// Its `return` time, which is smaller than `call`.
        ret: u64,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Json(msg) => write!(f, "malformed history JSON: {msg}"),
            HistoryError::ReturnBeforeCall { index, call, ret } => {
                write!(f, "operation {index} returns at {ret}, before its call at {call}")
            }
        }
    }
}

impl std::error::Error for HistoryError {}

impl History {
    /// Wraps a list of operations (not validated; see [`History::validate`]).
    pub fn new(ops: Vec<Operation>) -> Self {
        History { ops }
    }

    /// Checks the invariants JSON input must satisfy: every completed
    /// operation has `call <= return`.
    pub fn validate(&self) -> Result<(), HistoryError> {
        for (index, op) in self.ops.iter().enumerate() {
            if let Some(ret) = op.ret {
                if ret < op.call {
                    return Err(HistoryError::ReturnBeforeCall { index, call: op.call, ret });
                }
            }
        }
        Ok(())
    }

    /// The JSON array, one operation object per line so that diffs and
    /// `grep` stay usable on large histories.
    pub fn to_json(&self) -> String {
        let mut out = String::from("[");
        for (i, op) in self.ops.iter().enumerate() {
            out.push_str(if i == 0 { "\n  " } else { ",\n  " });
            // Serialising a struct of strings and integers into a String has
            // no failure path in serde_json (no I/O, no non-string map keys).
            let line = serde_json::to_string(op).expect("an Operation always serialises");
            out.push_str(&line);
        }
        out.push_str(if self.ops.is_empty() { "]\n" } else { "\n]\n" });
        out
    }

    /// Parses and validates a JSON array of operations.
    pub fn from_json(s: &str) -> Result<History, HistoryError> {
        let ops: Vec<Operation> = serde_json::from_str(s).map_err(|e| HistoryError::Json(e.to_string()))?;
        let history = History { ops };
        history.validate()?;
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        History::new(vec![
            Operation::put(1, "k", "v", 0, Some(3)),
            Operation::append(2, "k", "w", 1, None),
            Operation::get(3, "k", "vw", 4, Some(4)),
        ])
    }

    #[test]
    fn json_round_trip() {
        let h = sample();
        let text = h.to_json();
        assert_eq!(History::from_json(&text), Ok(h));
        let empty = History::default();
        assert_eq!(History::from_json(&empty.to_json()), Ok(empty));
    }

    #[test]
    fn json_field_names_are_exact() {
        let text = sample().to_json();
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let array = value.as_array().expect("a plain array");
        assert_eq!(array.len(), 3);
        let obj = array[1].as_object().expect("an object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["call", "client", "key", "kind", "output", "return", "value"]);
        assert_eq!(obj["kind"], "append");
        assert_eq!(obj["return"], serde_json::Value::Null);
        assert_eq!(array[0]["kind"], "put");
        assert_eq!(array[2]["kind"], "get");
        assert_eq!(array[2]["return"], 4);
    }

    #[test]
    fn parses_hand_written_json() {
        let text = r#"[{"client": 7, "kind": "get", "key": "a", "value": "",
                        "output": "x", "call": 5, "return": 9}]"#;
        let h = History::from_json(text).expect("valid");
        assert_eq!(h.ops, vec![Operation::get(7, "a", "x", 5, Some(9))]);
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        let good = r#""client":1,"kind":"put","key":"k","value":"v","output":"","call":1"#;
        let bad = [
            String::new(),
            "{".into(),
            "[".into(),
            "null".into(),
            "{}".into(),
            "[1]".into(),
            "[{}]".into(),
            "[[]]".into(),
            "\u{0}".into(),
            "[{\"client\":1}]".into(),
            format!("[{{{good}}}]"), // missing "return"
            format!("[{{{good},\"return\":2,\"extra\":0}}]"),
            format!("[{{{good},\"return\":-2}}]"),
            format!("[{{{good},\"return\":2.5}}]"),
            format!("[{{{good},\"return\":18446744073709551616}}]"),
            format!("[{{{good},\"return\":2,\"return\":3}}]"),
            format!("[{{{good},\"return\":\"2\"}}]"),
            format!("[{{{},\"return\":2}}]", good.replace("put", "cas")),
            format!("[{{{},\"return\":2}}]", good.replace("\"v\"", "null")),
            format!("[{{{good},\"return\":2}}"),
            "[".repeat(100_000),
        ];
        for text in &bad {
            let result = History::from_json(text);
            assert!(matches!(result, Err(HistoryError::Json(_))), "{text:.80}: {result:?}");
        }
        // Sanity: the fragment itself is fine once completed.
        assert!(History::from_json(&format!("[{{{good},\"return\":2}}]")).is_ok());
    }

    #[test]
    fn return_before_call_is_a_typed_error() {
        let text = r#"[{"client":1,"kind":"put","key":"k","value":"v","output":"","call":1,"return":1},
                       {"client":1,"kind":"get","key":"k","value":"","output":"","call":5,"return":4}]"#;
        assert_eq!(History::from_json(text), Err(HistoryError::ReturnBeforeCall { index: 1, call: 5, ret: 4 }));
    }

    #[test]
    fn precedes_uses_closed_intervals() {
        let a = Operation::put(1, "k", "v", 0, Some(5));
        let b = Operation::get(2, "k", "", 5, Some(6));
        let c = Operation::get(2, "k", "", 6, Some(7));
        assert!(!a.precedes(&b), "touching intervals are concurrent");
        assert!(a.precedes(&c));
        let pending = Operation::put(1, "k", "v", 0, None);
        assert!(!pending.precedes(&c));
    }
}
