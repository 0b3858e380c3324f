//! `raftkv check`: is a recorded history linearizable?

use raftkv::lincheck::{self, Budget, History, Verdict};
use std::path::Path;
use std::process::ExitCode;

/// The largest history file `raftkv check` reads: about ten million
/// operations. Parsed, a history takes about as much memory again as its
/// text, so this bounds the checker's memory before the search's own bound
/// (`Budget`) applies.
pub const HISTORY_FILE_BYTES_MAX: u64 = 1 << 30;

pub fn check(path: &Path, max_steps: u64, html: Option<&Path>) -> ExitCode {
    let parsed = read_bounded(path);
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
            println!(
                "NOT linearizable: key {:?}; these {} calls alone are not linearizable, and without any one of them \
                 they are:",
                v.key,
                v.ops.len()
            );
            println!("{v}");
            ExitCode::FAILURE
        }
        Verdict::Unknown { key } => {
            println!("unknown: the search budget ran out on key {key:?} (raise --max-steps)");
            ExitCode::from(3)
        }
    }
}

/// The file's text, refusing one above [`HISTORY_FILE_BYTES_MAX`] before
/// reading it (and never reading past the bound, should it grow).
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let too_big = |bytes: u64| {
        format!("the file holds {bytes} bytes; histories of at most {HISTORY_FILE_BYTES_MAX} bytes (1 GiB) are read")
    };
    let bytes = file.metadata().map_err(|e| e.to_string())?.len();
    if bytes > HISTORY_FILE_BYTES_MAX {
        return Err(too_big(bytes));
    }
    let mut text = String::with_capacity(bytes as usize);
    file.take(HISTORY_FILE_BYTES_MAX + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > HISTORY_FILE_BYTES_MAX {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}
