//! `raftkv::lincheck` on Porcupine's own key/value test histories
//! (`tests/testdata/porcupine/`, from github.com/anishathalye/porcupine
//! `test_data/kv/`, MIT licence alongside): the same verdicts as Porcupine's
//! tests, and for each bad history an explanation that explains. The
//! offending set is itself not linearizable, and dropping any one of its
//! calls makes it linearizable (or, for a set that is illegal only because
//! of real-time order, makes it legal once order is ignored: the same
//! property as the checker's unit tests and its fuzz target). It is not a
//! lone Get: each bad history's set holds the writes that make its read
//! impossible.
//!
//! The logs are Jepsen's EDN events, one per line, in real-time order:
//! `{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}`,
//! then `{:process 0, :type :ok, ...}` with a Get's result in `:value`. A
//! call runs from its invoke's line to its completion's line.

use raftkv::lincheck::{check, explain, Budget, History, OpKind, Operation, Verdict};
use raftkv::server::timeline::EXPLAIN_STEPS;
use std::collections::HashMap;
use std::path::Path;

/// One event's fields; `None` for a field the line lacks.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(name)? + name.len();
    let rest = line[start..].trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.find('"').map(|end| &quoted[..end]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// A Porcupine/Jepsen key/value log as a history, or what is wrong with it.
fn parse(text: &str) -> Result<History, String> {
    let mut open: HashMap<u64, Operation> = HashMap::new();
    let mut ops = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line}", number + 1);
        let time = number as u64;
        let process: u64 = field(line, ":process").and_then(|p| p.parse().ok()).ok_or_else(|| at("no :process"))?;
        // Client ids start at 1; Jepsen's processes at 0.
        let client = process + 1;
        let key = field(line, ":key").ok_or_else(|| at("no :key"))?;
        let value = field(line, ":value").ok_or_else(|| at("no :value"))?;
        match (field(line, ":type"), field(line, ":f")) {
            (Some(":invoke"), Some(f)) => {
                let kind = match f {
                    ":get" => OpKind::Get,
                    ":put" => OpKind::Put,
                    ":append" => OpKind::Append,
                    other => return Err(at(&format!("unknown :f {other}"))),
                };
                let argument = if kind == OpKind::Get { "" } else { value };
                let call = Operation::new(client, kind, key, argument, "", time, None);
                if open.insert(process, call).is_some() {
                    return Err(at("a second invoke before the first completed"));
                }
            }
            (Some(":ok"), Some(_)) => {
                let mut call = open.remove(&process).ok_or_else(|| at("a completion without an invoke"))?;
                if call.kind == OpKind::Get {
                    call.output = value.to_owned();
                }
                call.ret = Some(time);
                ops.push(call);
            }
            _ => return Err(at("not an :invoke or :ok event")),
        }
    }
    // The logs end with every call completed; one left open would be
    // pending (its outcome unknown).
    ops.extend(open.into_values());
    Ok(History::new(ops))
}

fn load(name: &str) -> History {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/porcupine").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn linearizable(ops: &[Operation]) -> bool {
    check(&History::new(ops.to_vec()), Budget::default()).is_ok()
}

#[test]
fn the_good_histories_are_linearizable() {
    for name in ["c01-ok.txt", "c10-ok.txt", "c50-ok.txt"] {
        let history = load(name);
        assert_eq!(check(&history, Budget::default()), Verdict::Ok, "{name}");
    }
}

#[test]
fn each_bad_history_is_explained_by_a_minimal_set_with_its_writes() {
    for name in ["c01-bad.txt", "c10-bad.txt", "c50-bad.txt"] {
        let history = load(name);
        let violation = match check(&history, Budget::default()) {
            Verdict::Illegal(v) => v,
            other => panic!("{name}: Porcupine finds it not linearizable; raftkv says {other:?}"),
        };
        let ops = &violation.ops;
        eprintln!("{name}: key {:?}, {} calls explain it:\n{violation}", violation.key, ops.len());
        assert!(ops.iter().all(|op| op.key == violation.key), "{name}: {ops:?}");
        assert!(
            ops.iter().any(|op| op.kind != OpKind::Get),
            "{name}: the explanation is reads alone, without the writes that make them impossible: {ops:?}"
        );
        assert!(!linearizable(ops), "{name}: the explanation alone is linearizable: {ops:?}");
        let timeless: Vec<Operation> = ops.iter().map(Operation::timeless).collect();
        let order_violation = linearizable(&timeless);
        for i in 0..ops.len() {
            let mut fewer = ops.clone();
            fewer.remove(i);
            let mut fewer_timeless = timeless.clone();
            fewer_timeless.remove(i);
            let explained = linearizable(&fewer) || (order_violation && !linearizable(&fewer_timeless));
            assert!(explained, "{name}: call {i} is not needed to explain the violation:\n{violation}");
        }

        // The picture's story (with the budget `raftkv check --html`
        // gives it): how far a linearization gets on the key, and the call
        // that cannot be placed after it. On c50's key of 230 calls with
        // Puts the search ends on its budget: the prefix is then the
        // longest found, not necessarily the longest.
        let explanation = explain(&history, &violation.key, Budget::steps(EXPLAIN_STEPS));
        assert!(explanation.complete || name == "c50-bad.txt", "{name}: the longest prefix ran out of budget");
        assert!(!explanation.prefix.is_empty(), "{name}: no prefix: {explanation:?}");
        if explanation.complete {
            let blocked = explanation.blocked.unwrap_or_else(|| panic!("{name}: no call is blocked: {explanation:?}"));
            assert_eq!(history.ops[blocked].key, violation.key, "{name}");
        }
    }
}

/// The parser refuses what it does not understand, with the line.
#[test]
fn a_malformed_log_is_refused_with_its_line() {
    let good = r#"{:process 0, :type :invoke, :f :get, :key "1", :value nil}"#;
    for (text, expected) in [
        (format!("{good}\n{{:process 0, :type :fail, :f :get, :key \"1\", :value nil}}"), "line 2"),
        (r#"{:process 0, :type :ok, :f :get, :key "1", :value "x"}"#.to_string(), "without an invoke"),
        (format!("{good}\n{good}"), "second invoke"),
        (r#"{:process 0, :type :invoke, :f :cas, :key "1", :value nil}"#.to_string(), "unknown :f"),
    ] {
        let error = parse(&text).expect_err(&text);
        assert!(error.contains(expected), "{error}");
    }
}
