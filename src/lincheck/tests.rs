//! Scenario and differential tests of [`check()`] against [`check_brute`].

use super::brute::check_brute;
use super::gen::{generate, generate_with, mutate, GenParams, ValueStyle};
use super::*;
use crate::rng::Rng;

fn put(client: u64, value: &str, call: u64, ret: Option<u64>) -> Operation {
    Operation::put(client, "k", value, call, ret)
}
fn append(client: u64, value: &str, call: u64, ret: Option<u64>) -> Operation {
    Operation::append(client, "k", value, call, ret)
}
fn get(client: u64, output: &str, call: u64, ret: Option<u64>) -> Operation {
    Operation::get(client, "k", output, call, ret)
}

/// Hand-written single-key cases: (name, ops, linearizable?).
fn scenarios() -> Vec<(&'static str, Vec<Operation>, bool)> {
    vec![
        ("empty", vec![], true),
        ("get of missing key is empty", vec![get(1, "", 0, Some(1))], true),
        ("read of a value never written", vec![put(1, "a", 0, Some(1)), get(2, "b", 2, Some(3))], false),
        ("sequential put then get", vec![put(1, "a", 0, Some(1)), get(2, "a", 2, Some(3))], true),
        (
            "stale read after a completed put",
            vec![put(1, "a", 0, Some(1)), put(1, "b", 2, Some(3)), get(2, "a", 4, Some(5))],
            false,
        ),
        ("lost append", vec![append(1, "a", 0, Some(1)), append(2, "b", 2, Some(3)), get(3, "a", 4, Some(5))], false),
        ("duplicated append", vec![append(1, "a", 0, Some(1)), get(3, "aa", 4, Some(5))], false),
        (
            "same argument appended twice is fine",
            vec![append(1, "a", 0, Some(1)), append(2, "a", 0, Some(1)), get(3, "aa", 4, Some(5))],
            true,
        ),
        (
            "appends in real-time order only",
            vec![append(1, "a", 0, Some(1)), append(2, "b", 2, Some(3)), get(3, "ba", 4, Some(5))],
            false,
        ),
        (
            "concurrent appends, one order",
            vec![append(1, "a", 0, Some(5)), append(2, "b", 1, Some(4)), get(3, "ab", 6, Some(7))],
            true,
        ),
        (
            "concurrent appends, other order",
            vec![append(1, "a", 0, Some(5)), append(2, "b", 1, Some(4)), get(3, "ba", 6, Some(7))],
            true,
        ),
        (
            "concurrent appends, readers disagree",
            vec![
                append(1, "a", 0, Some(5)),
                append(2, "b", 1, Some(4)),
                get(3, "ba", 6, Some(7)),
                get(4, "ab", 6, Some(7)),
            ],
            false,
        ),
        (
            "concurrent puts, either order",
            vec![put(1, "a", 0, Some(5)), put(2, "b", 0, Some(5)), get(3, "a", 6, Some(7)), get(4, "a", 8, Some(9))],
            true,
        ),
        (
            "get concurrent with put sees old or new",
            vec![put(1, "a", 0, Some(1)), put(1, "b", 2, Some(6)), get(2, "a", 3, Some(4)), get(3, "b", 3, Some(4))],
            true,
        ),
        (
            "value flips back after being observed new",
            vec![put(1, "a", 0, Some(1)), put(1, "b", 2, Some(9)), get(2, "b", 3, Some(4)), get(3, "a", 5, Some(6))],
            false,
        ),
        ("pending put shows", vec![put(1, "a", 0, None), get(2, "a", 5, Some(6))], true),
        ("pending put does not show", vec![put(1, "a", 0, None), get(2, "", 5, Some(6))], true),
        (
            "pending put shows late, not early again",
            vec![put(1, "a", 0, None), get(2, "a", 5, Some(6)), get(2, "", 7, Some(8))],
            false,
        ),
        ("pending put must not show before its call", vec![get(2, "a", 0, Some(4)), put(1, "a", 5, None)], false),
        (
            "pending put may show in a get overlapping its call",
            vec![get(2, "a", 0, Some(5)), put(1, "a", 5, None)],
            true,
        ),
        (
            "pending append may take effect after later calls",
            vec![append(1, "a", 0, None), append(2, "b", 5, Some(6)), get(3, "ba", 7, Some(8))],
            true,
        ),
        ("pending get carries no information", vec![put(1, "a", 0, Some(1)), get(2, "nonsense", 2, None)], true),
        ("equal timestamps are concurrent", vec![put(1, "a", 0, Some(5)), get(2, "", 5, Some(9))], true),
        ("one tick later is not", vec![put(1, "a", 0, Some(5)), get(2, "", 6, Some(9))], false),
        (
            "zero-length intervals at one instant",
            vec![
                append(1, "a", 3, Some(3)),
                append(2, "b", 3, Some(3)),
                get(3, "ba", 3, Some(3)),
                get(4, "ba", 4, Some(4)),
            ],
            true,
        ),
        (
            "empty appends change nothing",
            vec![
                append(1, "", 0, Some(1)),
                append(2, "x", 0, Some(3)),
                append(1, "", 2, Some(3)),
                get(3, "", 0, Some(1)),
                get(3, "x", 4, Some(5)),
            ],
            true,
        ),
        (
            "ambiguous concatenation",
            vec![
                append(1, "a", 0, Some(9)),
                append(2, "ab", 0, Some(9)),
                append(3, "b", 0, Some(9)),
                get(4, "aba", 1, Some(2)),
                get(4, "abab", 10, Some(11)),
            ],
            true,
        ),
        (
            "put resets a later get's prefix",
            vec![
                append(1, "a", 0, Some(1)),
                append(1, "b", 2, Some(9)),
                put(2, "c", 3, Some(4)),
                get(3, "cb", 10, Some(11)),
            ],
            true,
        ),
        (
            "an append erased by a later put cannot reappear",
            vec![append(1, "a", 0, Some(1)), put(2, "p", 2, Some(3)), get(3, "pa", 4, Some(5))],
            false,
        ),
        (
            "a concurrent append may land after the put",
            vec![append(1, "a", 0, Some(5)), put(2, "p", 1, Some(2)), get(3, "pa", 6, Some(7))],
            true,
        ),
        (
            "appends erased by a put leave no trace",
            vec![
                append(1, "a", 0, Some(1)),
                append(2, "b", 0, Some(1)),
                put(3, "p", 2, Some(3)),
                get(4, "p", 4, Some(5)),
                append(1, "c", 6, Some(7)),
                get(4, "pc", 8, Some(9)),
            ],
            true,
        ),
        (
            "a pending put may take effect between later calls",
            vec![
                put(1, "p", 0, None),
                append(2, "a", 1, Some(2)),
                get(3, "a", 3, Some(4)),
                append(2, "b", 5, Some(6)),
                get(3, "pb", 7, Some(8)),
            ],
            true,
        ),
        (
            "a pending put takes effect once",
            vec![
                put(1, "p", 0, None),
                get(3, "p", 1, Some(2)),
                append(2, "a", 3, Some(4)),
                get(3, "pa", 5, Some(6)),
                put(2, "q", 7, Some(8)),
                get(3, "p", 9, Some(10)),
            ],
            false,
        ),
        ("backwards interval", vec![get(1, "", 5, Some(4))], false),
    ]
}

fn brute_ok(ops: &[Operation]) -> bool {
    check_brute(&History::new(ops.to_vec())).expect("scenario within brute-force size")
}

#[test]
fn scenarios_agree_with_expectation_and_brute_force() {
    for (name, ops, expected) in scenarios() {
        assert_eq!(brute_ok(&ops), expected, "brute force on {name:?}");
        let verdict = check(&History::new(ops.clone()), Budget::default());
        match (&verdict, expected) {
            (Verdict::Ok, true) => {}
            (Verdict::Illegal(v), false) => {
                assert_eq!(v.key, "k", "{name}");
                assert_violation_is_minimal(&v.ops, name);
            }
            _ => panic!("{name}: expected linearizable={expected}, got {verdict:?}"),
        }
    }
}

/// The reported ops are illegal, and dropping any one makes them legal or,
/// if their values fit together in some order (a violation of order), leaves
/// values that fit in no order (a read of a value nothing left wrote):
/// checked with the brute-force reference when small enough.
fn assert_violation_is_minimal(ops: &[Operation], context: &str) {
    assert!(!ops.is_empty(), "{context}: empty violation");
    if ops.len() > brute::BRUTE_MAX_OPS {
        return;
    }
    assert!(!brute_ok(ops), "{context}: violation {ops:?} is linearizable");
    let order_violation = brute_ok(&timeless(ops));
    for i in 0..ops.len() {
        let mut fewer = ops.to_vec();
        fewer.remove(i);
        let explained = brute_ok(&fewer) || (order_violation && !brute_ok(&timeless(&fewer)));
        assert!(explained, "{context}: violation {ops:?} not minimal, op {i} is redundant");
    }
}

/// `ops` with every call overlapping every other.
fn timeless(ops: &[Operation]) -> Vec<Operation> {
    ops.iter().map(Operation::timeless).collect()
}

#[test]
fn stale_read_violation_names_the_put_and_the_get() {
    let ops = vec![put(1, "a", 0, Some(1)), append(3, "z", 20, Some(30)), get(2, "", 4, Some(5))];
    let verdict = check(&History::new(ops.clone()), Budget::default());
    assert_eq!(verdict, Verdict::Illegal(Violation { key: "k".into(), ops: vec![ops[0].clone(), ops[2].clone()] }));
}

/// A read that missed a completed append is explained with the append it
/// did see, not as a lone read of a value from nowhere (Porcupine's
/// `c01-bad` kind of history).
#[test]
fn a_stale_read_is_explained_with_the_writes_it_saw() {
    let ops = vec![append(1, "a", 0, Some(1)), append(2, "b", 2, Some(3)), get(3, "a", 4, Some(5))];
    let verdict = check(&History::new(ops.clone()), Budget::default());
    assert_eq!(verdict, Verdict::Illegal(Violation { key: "k".into(), ops: ops.clone() }));
}

/// `raftkv check` prints a violation as a table: aligned columns, values
/// quoted and escaped, a long value elided in its middle, a call that
/// never returned marked so.
#[test]
fn a_violation_prints_as_a_table() {
    let long = "x".repeat(30) + &"y".repeat(30);
    let v = Violation {
        key: "k".into(),
        ops: vec![
            Operation::put(1, "k", "1\x1b[31m", 0, Some(1)),
            Operation::append(12, "k", &long, 2, None),
            Operation::get(3, "k", "", 40, Some(123)),
            Operation::delete(3, "k", "0", 124, Some(125)),
        ],
    };
    let expected = [
        r#"client  call                                                                           result      invoke  return"#,
        r#"     1  Put("k", "1\u{1b}[31m")                                                                         0       1"#,
        r#"    12  Append("k", "xxxxxxxxxxxxxxxxxxxxxxxx"…(12 chars)…"yyyyyyyyyyyyyyyyyyyyyyyy")  (no reply)       2       -"#,
        r#"     3  Get("k")                                                                       ""              40     123"#,
        r#"     3  Delete("k")                                                                    0              124     125"#,
    ];
    assert_eq!(v.to_string(), expected.join("\n"));
}

/// A read of a value no call wrote is a complete violation by itself.
#[test]
fn a_read_of_a_value_never_written_is_its_own_violation() {
    let ops = vec![append(1, "a", 0, Some(1)), append(2, "b", 2, Some(3)), get(3, "zz", 4, Some(5))];
    let verdict = check(&History::new(ops.clone()), Budget::default());
    assert_eq!(verdict, Verdict::Illegal(Violation { key: "k".into(), ops: vec![ops[2].clone()] }));
}

#[test]
fn keys_are_checked_independently_in_order() {
    let mut ops = vec![
        Operation::put(1, "b", "1", 0, Some(1)),
        Operation::get(2, "b", "", 2, Some(3)), // illegal on "b"
        Operation::put(1, "a", "1", 0, Some(1)),
        Operation::get(2, "a", "1", 2, Some(3)),
        Operation::put(1, "c", "1", 0, Some(1)),
        Operation::get(2, "c", "", 2, Some(3)), // illegal on "c"
    ];
    let verdict = check(&History::new(ops.clone()), Budget::default());
    match verdict {
        Verdict::Illegal(v) => assert_eq!(v.key, "b"),
        other => panic!("{other:?}"),
    }
    // The same values on different keys do not interact.
    ops.retain(|o| o.key == "a");
    ops.push(Operation::get(3, "z", "", 2, Some(3)));
    assert_eq!(check(&History::new(ops), Budget::default()), Verdict::Ok);
}

#[test]
fn budget_exhaustion_is_unknown_and_does_not_hide_illegal_keys() {
    // Each of "a" and "b" needs exactly 6 steps: 3 to set up (one per
    // operation) and 3 to linearize.
    let mut ops = Vec::new();
    for key in ["a", "b"] {
        ops.push(Operation::put(1, key, "1", 0, Some(1)));
        ops.push(Operation::get(2, key, "1", 2, Some(3)));
        ops.push(Operation::get(2, key, "1", 4, Some(5)));
    }
    let h = History::new(ops.clone());
    assert_eq!(check(&h, Budget::steps(5)), Verdict::Unknown { key: "a".into() });
    assert_eq!(check(&h, Budget::steps(6)), Verdict::Ok);
    // "c" needs 3 steps (set up; try the Get; meet its return with nothing
    // to undo): it is caught although "a" and "b" come first and are
    // Unknown.
    let bad = Operation::get(2, "c", "x", 2, Some(3));
    ops.push(bad.clone());
    assert_eq!(
        check(&History::new(ops), Budget::steps(5)),
        Verdict::Illegal(Violation { key: "c".into(), ops: vec![bad] })
    );
    assert_eq!(check(&History::new(vec![]), Budget::steps(0)), Verdict::Ok);
}

#[test]
fn backwards_interval_does_not_panic() {
    let ops = vec![append(1, "a", 0, Some(1)), get(2, "", 9, Some(3)), get(2, "", 0, Some(0))];
    let verdict = check(&History::new(ops.clone()), Budget::default());
    assert_eq!(verdict, Verdict::Illegal(Violation { key: "k".into(), ops: vec![ops[1].clone()] }));
}

#[test]
fn extreme_times_do_not_overflow() {
    let ops = vec![
        put(1, "a", u64::MAX - 1, Some(u64::MAX)),
        get(2, "a", u64::MAX, Some(u64::MAX)),
        append(3, "b", u64::MAX, None),
        get(4, "", 0, Some(0)),
    ];
    assert_eq!(check(&History::new(ops), Budget::default()), Verdict::Ok);
}

#[test]
fn generated_histories_are_linearizable() {
    for seed in 0..40 {
        let params = GenParams {
            pending_pct: (seed % 4) as u32 * 5,
            ..GenParams::new(500, 1 + (seed % 9) as usize, 1 + (seed % 5) as usize, 45, 10)
        };
        let h = generate_with(seed, &params);
        assert_eq!(check(&h, Budget::default()), Verdict::Ok, "seed {seed}, {params:?}");
    }
}

/// The case Porcupine gives up on: one key, 8 clients, 1000 ops, 90%
/// appends with distinct arguments.
#[test]
fn append_heavy_single_key_is_decided_quickly() {
    for seed in 0..5 {
        let h = generate(seed, 1_000, 8, 1, 90, 0);
        // A few steps per operation, nowhere near the default budget.
        assert_eq!(check(&h, Budget::steps(100_000)), Verdict::Ok, "seed {seed}");
    }
    let pending = GenParams { pending_pct: 5, ..GenParams::new(1_000, 8, 1, 90, 0) };
    let h = generate_with(1, &pending);
    assert_eq!(check(&h, Budget::steps(100_000)), Verdict::Ok);
}

/// Corrupting one Get in the middle of an append-heavy key is caught, and
/// the report is small and confirmed by brute force.
#[test]
fn append_heavy_single_key_corruption_is_found() {
    let mut h = generate(11, 1_000, 8, 1, 90, 0);
    let gets: Vec<usize> =
        (0..h.ops.len()).filter(|&i| h.ops[i].kind == OpKind::Get && h.ops[i].output.len() > 20).collect();
    let g = gets[gets.len() / 2];
    // Drop one append's worth of text from the middle of what was read.
    let out = &mut h.ops[g].output;
    let cut = out[..out.len() / 2].rfind('x').unwrap_or(0);
    let after = out[cut..].find('y').map_or(out.len(), |p| cut + p + 1);
    out.replace_range(cut..after, "");
    match check(&h, Budget::steps(2_000_000)) {
        // Any Get with a non-empty output is unexplainable on its own, so
        // the 1-minimal set is typically a single Get.
        Verdict::Illegal(v) => assert_violation_is_minimal(&v.ops, "append-heavy"),
        other => panic!("{other:?}"),
    }
}

/// Thousands of small random histories, two thirds of them corrupted: the fast
/// checker and the brute-force reference must agree, and violations must be
/// 1-minimal.
#[test]
fn differential_against_brute_force() {
    const CASES: u64 = 30_000;
    let (mut legal, mut illegal) = (0, 0);
    for seed in 0..CASES {
        let mut rng = Rng::new(seed ^ 0xD1FF);
        let append_pct = rng.range(0, 70) as u32;
        let params = GenParams {
            ops: rng.range(1, brute::BRUTE_MAX_OPS as u64 + 1) as usize,
            clients: rng.range(1, 5) as usize,
            keys: rng.range(1, 3) as usize,
            append_pct,
            put_pct: rng.range(0, u64::from(100 - append_pct)) as u32,
            pending_pct: [0, 10, 30][rng.range(0, 3) as usize],
            max_duration: rng.range(0, 7),
            max_gap: rng.range(0, 3),
            values: if rng.chance(70, 100) { ValueStyle::Tiny } else { ValueStyle::Distinct },
            // Drawn last, so the other parameters are those of before
            // conditional calls existed.
            conditional_pct: if rng.chance(50, 100) { rng.range(0, 40) as u32 } else { 0 },
        };
        let mut h = generate_with(seed, &params);
        let corrupt = seed % 3 != 0;
        if corrupt {
            h = mutate(seed, &h);
            if seed % 3 == 2 {
                h = mutate(!seed, &h);
            }
        }
        let reference = check_brute(&h).expect("small history");
        let verdict = check(&h, Budget::steps(1_000_000));
        let context = format!("seed {seed}, {params:?}\n{}", h.to_json());
        match (&verdict, reference) {
            (Verdict::Ok, true) => legal += 1,
            (Verdict::Illegal(v), false) => {
                illegal += 1;
                assert!(v.ops.iter().all(|o| o.key == v.key), "{context}");
                assert_violation_is_minimal(&v.ops, &context);
            }
            _ => panic!("fast checker says {verdict:?}, brute force says {reference}: {context}"),
        }
        if !corrupt {
            assert!(reference, "generator produced an illegal history: {context}");
        }
    }
    eprintln!("differential: {legal} legal, {illegal} illegal");
    assert!(legal > CASES / 3, "only {legal} legal cases");
    assert!(illegal > CASES / 10, "only {illegal} illegal cases");
}

/// The minimiser's path for keys whose calls cannot be decided without
/// times (hundreds of calls with Puts, as in Porcupine's `c50-bad`):
/// forced here on small histories, where brute force can judge its result
/// by the same minimality property as the other paths.
#[test]
fn the_minimisers_undecided_path_is_minimal_too() {
    let mut streams = Rng::new(0x51DE);
    let mut shrunk = 0;
    for case in 0..800 {
        let mut rng = streams.fork();
        let params = GenParams {
            values: if rng.chance(60, 100) { ValueStyle::Tiny } else { ValueStyle::Distinct },
            max_duration: rng.range(0, 7),
            conditional_pct: if rng.chance(30, 100) { 20 } else { 0 },
            ..GenParams::new(
                rng.range(2, brute::BRUTE_MAX_OPS as u64 + 1) as usize,
                rng.range(1, 4) as usize,
                1,
                45,
                25,
            )
        };
        let seed = rng.next_u64();
        let h = mutate(seed, &generate_with(seed, &params));
        if check_brute(&h) != Some(false) {
            continue;
        }
        let relevant: Vec<&Operation> = h.ops.iter().filter(|o| !(o.kind == OpKind::Get && o.ret.is_none())).collect();
        let small =
            minimise::minimise_given(relevant, None, check::Steps::new(1_000_000), check::Steps::new(10_000_000));
        let small: Vec<Operation> = small.into_iter().cloned().collect();
        assert_violation_is_minimal(&small, &format!("case {case}, {params:?}\n{}", h.to_json()));
        shrunk += 1;
    }
    eprintln!("{shrunk} illegal histories shrunk");
    assert!(shrunk > 150, "only {shrunk} illegal histories");
}

/// The general search (keys with conditional calls) and the append-aware
/// one (all other keys) decide the same on histories of Puts, Appends and
/// Gets too long for brute force: two independent searches over one spec.
#[test]
fn general_search_agrees_with_the_append_aware_one() {
    let (mut legal, mut illegal) = (0, 0);
    for seed in 0..2_000 {
        let mut rng = Rng::new(seed ^ 0x6E6E);
        let params = GenParams {
            values: if rng.chance(50, 100) { ValueStyle::Tiny } else { ValueStyle::Distinct },
            pending_pct: [0, 10][rng.range(0, 2) as usize],
            max_duration: rng.range(1, 8),
            ..GenParams::new(rng.range(10, 60) as usize, rng.range(2, 5) as usize, 1, 45, 15)
        };
        let mut h = generate_with(seed, &params);
        if seed % 2 == 1 {
            h = mutate(seed, &h);
        }
        let ops: Vec<&Operation> = h.ops.iter().collect();
        let fast = check::check_key(&ops, &mut check::Steps::new(1_000_000));
        let general = general::check_key(&ops, &mut check::Steps::new(1_000_000));
        assert_eq!(fast, general, "seed {seed}, {params:?}\n{}", h.to_json());
        match fast {
            check::KeyOutcome::Ok => legal += 1,
            check::KeyOutcome::Illegal => illegal += 1,
            check::KeyOutcome::Unknown => {}
        }
    }
    assert!(legal > 900 && illegal > 300, "{legal} legal, {illegal} illegal");
}

/// Valid histories with Deletes and PutIfAbsents on few keys, longer than
/// brute force allows, are accepted within a small budget; corrupted ones
/// are refused with a violation on one key.
#[test]
fn conditional_calls_are_checked() {
    let (mut accepted, mut refused) = (0, 0);
    for seed in 0..200 {
        let params = GenParams {
            conditional_pct: 30,
            pending_pct: 5,
            values: ValueStyle::Tiny,
            ..GenParams::new(150, 4, 3, 20, 10)
        };
        let h = generate_with(seed, &params);
        assert!(h.ops.iter().any(|o| o.kind == OpKind::Delete), "seed {seed}");
        assert!(h.ops.iter().any(|o| o.kind == OpKind::PutIfAbsent), "seed {seed}");
        assert_eq!(check(&h, Budget::steps(2_000_000)), Verdict::Ok, "seed {seed}\n{}", h.to_json());
        accepted += 1;
        if let Verdict::Illegal(v) = check(&mutate(seed, &h), Budget::steps(2_000_000)) {
            assert!(v.ops.iter().all(|o| o.key == v.key), "seed {seed}");
            refused += 1;
        }
    }
    assert!(accepted == 200 && refused > 50, "{accepted} accepted, {refused} refused");
}

/// Larger histories than brute force can handle: a corruption found by the
/// checker must come with a violation the brute force confirms.
#[test]
fn violations_of_larger_histories_are_confirmed_by_brute_force() {
    let mut found = 0;
    for seed in 0..300 {
        let params = GenParams {
            values: ValueStyle::Tiny,
            pending_pct: 10,
            max_duration: 6,
            ..GenParams::new(40, 4, 2, 40, 15)
        };
        let h = mutate(seed, &generate_with(seed, &params));
        if let Verdict::Illegal(v) = check(&h, Budget::default()) {
            found += 1;
            assert_violation_is_minimal(&v.ops, &format!("seed {seed}"));
        }
    }
    assert!(found > 50, "only {found} corrupted histories were illegal");
}
