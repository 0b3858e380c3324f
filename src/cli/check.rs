//! `raftkv check`: is a recorded history linearizable?

use raftkv::lincheck::{self, Budget, History, Verdict};
use std::path::Path;
use std::process::ExitCode;

pub fn check(path: &Path, max_steps: u64, html: Option<&Path>) -> ExitCode {
    let parsed = std::fs::read_to_string(path).map_err(|e| e.to_string());
    let history = match parsed.and_then(|text| History::from_json(&text).map_err(|e| e.to_string())) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let verdict = lincheck::check(&history, Budget::steps(max_steps));
    let took = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(html) = html {
        let title = path.display().to_string();
        match raftkv::server::timeline::write(html, &title, &history, &verdict) {
            Ok(()) => println!("timeline written to {}", html.display()),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", html.display());
                return ExitCode::from(2);
            }
        }
    }
    match verdict {
        Verdict::Ok => {
            println!("linearizable ({} operations, {took:.1} ms)", history.ops.len());
            ExitCode::SUCCESS
        }
        Verdict::Illegal(v) => {
            println!("NOT linearizable: key {:?}; a minimal offending set of operations:", v.key);
            for op in &v.ops {
                println!("  {}", serde_json::to_string(op).unwrap_or_default());
            }
            ExitCode::FAILURE
        }
        Verdict::Unknown { key } => {
            println!("unknown: the search budget ran out on key {key:?} (raise --max-steps)");
            ExitCode::from(3)
        }
    }
}
