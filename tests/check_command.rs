//! `raftkv check`: bad history files get clear errors, and `--html` in a
//! real browser.
//!
//! `raftkv check --html` in a real browser: the page a failing check
//! writes is opened by headless Chromium (`--dump-dom` prints the document
//! after its script has run), and the timeline must be there: one bar per
//! call of the illegal key, the call that cannot be placed in red, the
//! minimal offending set as a table, and no value turned into markup. A
//! screenshot is kept as an artifact (`target/tmp/timeline.png`).
//!
//! Needs `chromium` (Debian's package); skipped with a message without it,
//! unless `RAFTKV_REQUIRE_BROWSER=1` (set by `.ci/run`, which installs it).

use raftkv::lincheck::{History, Operation};
use raftkv::server::tempdir::TempDir;
use std::path::PathBuf;
use std::process::Command;

fn browser() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        assert!(
            std::env::var("RAFTKV_REQUIRE_BROWSER").is_err(),
            "RAFTKV_REQUIRE_BROWSER is set but no Chromium found"
        );
        eprintln!("skipped: no chromium on this machine (apt-get install chromium)");
    }
    found
}

/// Runs headless Chromium on `page` with `args` and returns its stdout.
/// Bounded: a page that never settles (a script stuck in a dialog) is
/// killed after a minute by coreutils' `timeout`, and the test fails.
fn headless(browser: &str, page: &std::path::Path, args: &[&str]) -> String {
    let profile = TempDir::new("chromium-profile").unwrap();
    let out = Command::new("timeout")
        .args(["--kill-after=5", "60", browser])
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{browser} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_timeline_of_a_failing_check_opens_in_a_browser() {
    let Some(browser) = browser() else { return };
    let dir = TempDir::new("timeline").unwrap();
    let evil = "<img src=x onerror=alert(1)>";
    // Three clients append; a read misses the last append, which had
    // completed before the read began. Another key holds markup.
    let history = History::new(vec![
        Operation::append(1, "k", "a", 0, Some(3)),
        Operation::append(2, "k", "b", 2, Some(5)),
        Operation::append(3, "k", "c", 6, Some(7)),
        Operation::get(4, "k", "ab", 9, Some(10)),
        Operation::put(5, evil, evil, 0, None),
    ]);
    let json = dir.path().join("h.json");
    std::fs::write(&json, history.to_json()).unwrap();
    let html = dir.path().join("h.html");
    let out =
        Command::new(env!("CARGO_BIN_EXE_raftkv")).arg("check").arg(&json).arg("--html").arg(&html).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("NOT linearizable") && text.contains("timeline written to"), "{text}");

    let dom = headless(browser, &html, &["--dump-dom"]);
    assert!(dom.contains("<svg"), "no timeline drawn:\n{dom}");
    assert_eq!(dom.matches("<rect").count(), 4, "one bar per call of key \"k\":\n{dom}");
    assert_eq!(dom.matches("fill=\"#f4a3a8\"").count(), 1, "the stale read, drawn red:\n{dom}");
    assert!(dom.contains("Minimal offending set") && dom.contains("get(\"k\")"), "{dom}");
    assert!(dom.contains("NOT linearizable (key \"k\")"), "{dom}");
    assert!(!dom.contains("<img"), "a value became markup:\n{dom}");
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "the value is shown as text:\n{dom}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("timeline.png");
    headless(browser, &html, &[&format!("--screenshot={}", shot.display()), "--window-size=1200,800"]);
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "no screenshot at {}", shot.display());
}

/// Runs `raftkv check` on a file holding `text`; its exit code and output.
fn check_text(dir: &TempDir, name: &str, text: &[u8]) -> (Option<i32>, String) {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).arg("check").arg(&path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Malformed, truncated, inconsistent and oversized files: exit 2 and a
/// message naming the file and, where there is one, the position.
#[test]
fn bad_history_files_get_clear_errors() {
    let dir = TempDir::new("check-bad").unwrap();
    let op = |kind: &str, call: u64, ret: u64| {
        format!(r#"{{"client":1,"kind":"{kind}","key":"k","value":"v","output":"","call":{call},"return":{ret}}}"#)
    };
    let cases: [(&str, String, &str); 5] = [
        ("truncated.json", format!("[{}", &op("put", 0, 1)[..30]), "line 1 column"),
        ("backwards.json", format!("[{}]", op("put", 5, 3)), "operation 0 returns at 3, before its call at 5"),
        ("unknown.json", format!("[{}]", op("incr", 0, 1)), "unknown variant `incr`"),
        ("misspelt.json", format!("[{}]", op("put", 0, 1).replace("return", "retrun")), "retrun"),
        ("not-json.json", "\u{0}\u{1}garbage".into(), "malformed history JSON"),
    ];
    for (name, text, expected) in cases {
        let (code, output) = check_text(&dir, name, text.as_bytes());
        assert_eq!(code, Some(2), "{name}: {output}");
        assert!(output.contains(name) && output.contains(expected), "{name}: {output}");
    }
    // A file above the bound is refused from its size, before any of it
    // is read (sparse: it takes no disk).
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge).unwrap().set_len((1 << 30) + 1).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).arg("check").arg(&huge).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("1073741825 bytes") && text.contains("at most 1073741824"), "{text}");
}
