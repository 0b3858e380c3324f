//! The architecture, held by the build: the pure modules do no I/O, read no
//! clock, spawn no thread and draw no ambient randomness, and each depends
//! only on the modules `ARCHITECTURE.md` allows.
//!
//! Every file of a pure module is parsed with `syn`; every path it names (in
//! `use` trees, expressions, types, and the tokens of macro calls) is checked
//! against [`FORBIDDEN`] and the module's row of [`ALLOWED_DEPS`]. Test code
//! (`#[cfg(test)]` modules and files, `#[test]` functions) is exempt: a test
//! may write a temporary file. The check itself is tested by
//! `the_check_catches_each_forbidden_use`, which adds each forbidden import to
//! a copy of a pure module's source and expects the violation.

use proc_macro2::{TokenStream, TokenTree};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// The pure modules and the crate modules each may use (besides itself).
/// The same table, in prose, is in `ARCHITECTURE.md`.
const ALLOWED_DEPS: &[(&str, &[&str])] = &[
    ("rng", &[]),
    ("shrink", &[]),
    ("raft", &["rng"]),
    ("kv", &["raft"]),
    ("clerk", &["kv", "raft"]),
    ("wire", &["raft", "kv"]),
    ("wal", &["raft", "kv"]),
    ("lincheck", &["shrink", "rng"]),
    ("sim", &["raft", "kv", "clerk", "lincheck", "rng"]),
];

/// Path prefixes no pure module may name, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("std::net", "network I/O"),
    ("std::fs", "file I/O"),
    ("std::thread", "threads"),
    ("std::process", "processes"),
    ("std::env", "the environment"),
    ("std::io::stdin", "terminal I/O"),
    ("std::io::stdout", "terminal I/O"),
    ("std::io::stderr", "terminal I/O"),
    ("std::time::Instant", "the clock"),
    ("std::time::SystemTime", "the clock"),
    ("Instant", "the clock"),
    ("SystemTime", "the clock"),
    ("std::collections::hash_map::RandomState", "ambient randomness"),
    ("RandomState", "ambient randomness"),
    ("HashMap::new", "ambient randomness (RandomState; name a deterministic hasher)"),
    ("HashMap::with_capacity", "ambient randomness (RandomState; name a deterministic hasher)"),
    ("HashSet::new", "ambient randomness (RandomState; name a deterministic hasher)"),
    ("HashSet::with_capacity", "ambient randomness (RandomState; name a deterministic hasher)"),
    ("tokio", "the async runtime"),
    ("redb", "the disk"),
    ("rand", "ambient randomness"),
    ("getrandom", "ambient randomness"),
    ("libc", "system calls"),
];

/// Macros that write to the terminal.
const FORBIDDEN_MACROS: &[&str] = &["print", "println", "eprint", "eprintln", "dbg"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn pure_modules_do_no_io_and_depend_only_on_what_is_allowed() {
    let mut problems = Vec::new();
    for (module, _) in ALLOWED_DEPS {
        let files = module_files(module);
        assert!(!files.is_empty(), "module {module} has no files");
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            for v in violations(module, &source) {
                problems.push(format!("{}: {v}", file.strip_prefix(src()).unwrap().display()));
            }
        }
    }
    assert!(problems.is_empty(), "the pure core breaks the architecture (ARCHITECTURE.md):\n{}", problems.join("\n"));
}

#[test]
fn the_check_catches_each_forbidden_use() {
    let clean = std::fs::read_to_string(src().join("raft").join("progress.rs")).unwrap();
    assert_eq!(violations("raft", &clean), Vec::<String>::new(), "the unmodified file is clean");
    let injected = [
        "use std::net::TcpStream;",
        "use std::{collections::BTreeMap, fs::File};",
        "fn f() { std::thread::spawn(|| ()); }",
        "use std::time::{Duration, Instant};",
        "fn f() -> u64 { std::time::SystemTime::now().elapsed().unwrap().as_secs() }",
        "fn f() { let m: std::collections::HashMap<u8, u8> = std::collections::HashMap::new(); }",
        "fn f() { let s = std::collections::HashSet::<u8>::new(); }",
        "type M = std::collections::HashMap<u8, u8>;",
        "async fn f() { tokio::task::yield_now().await }",
        "fn f(db: &redb::Database) {}",
        "fn f() { println!(\"{}\", 1); }",
        "fn f() { let _ = writeln!(std::io::stdout(), \"x\"); }",
        "use crate::sim::Sim;",
        "fn f(_: crate::server::node::Status) {}",
    ];
    for line in injected {
        let source = format!("{clean}\n{line}\n");
        assert!(!violations("raft", &source).is_empty(), "not caught: {line}");
    }
    // Test code is exempt, and a deterministic hasher is fine.
    let exempt = format!(
        "{clean}\n#[cfg(test)]\nmod t {{ use std::fs::File; }}\n#[test]\nfn t() {{ std::thread::yield_now(); }}\n\
         type M = std::collections::HashMap<u8, u8, std::hash::BuildHasherDefault<std::hash::DefaultHasher>>;\n"
    );
    assert_eq!(violations("raft", &exempt), Vec::<String>::new());
}

/// The files of `module` (`src/module.rs` or everything under `src/module/`),
/// without the files that a `#[cfg(test)] mod x;` declaration brings in.
fn module_files(module: &str) -> Vec<PathBuf> {
    let single = src().join(format!("{module}.rs"));
    if single.exists() {
        return vec![single];
    }
    let mut files = Vec::new();
    collect_rs(&src().join(module), &mut files);
    let test_only: BTreeSet<PathBuf> = files.iter().flat_map(|f| test_module_files(f)).collect();
    files.retain(|f| !test_only.contains(f));
    files.sort();
    files
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Files declared by `#[cfg(test)] mod name;` in `file`.
fn test_module_files(file: &Path) -> Vec<PathBuf> {
    let ast = syn::parse_file(&std::fs::read_to_string(file).unwrap()).unwrap();
    let dir = if file.file_name().is_some_and(|n| n == "mod.rs") {
        file.parent().unwrap().to_path_buf()
    } else {
        file.with_extension("")
    };
    ast.items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) if m.content.is_none() && is_test_only(&m.attrs) => {
                let name = m.ident.to_string();
                let flat = dir.join(format!("{name}.rs"));
                Some(if flat.exists() { flat } else { dir.join(name).join("mod.rs") })
            }
            _ => None,
        })
        .collect()
}

/// What `source`, a file of `module`, does that a pure module may not.
fn violations(module: &str, source: &str) -> Vec<String> {
    let ast = match syn::parse_file(source) {
        Ok(ast) => ast,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let mut paths = Paths::default();
    paths.visit_file(&ast);
    let allowed: &[&str] = ALLOWED_DEPS.iter().find(|(m, _)| *m == module).map_or(&[], |(_, deps)| deps);
    let mut found = Vec::new();
    for (line, path) in &paths.found {
        for (prefix, why) in FORBIDDEN {
            if names_prefix(path, prefix) {
                found.push(format!("line {line}: `{path}` ({why})"));
            }
        }
        if let Some(rest) = path.strip_prefix("crate::") {
            let dep = rest.split("::").next().unwrap_or("");
            if dep != module && !allowed.contains(&dep) {
                found.push(format!("line {line}: `{path}`: {module} may depend only on {allowed:?}"));
            }
        }
    }
    for (line, name) in &paths.macros {
        if FORBIDDEN_MACROS.contains(&name.as_str()) {
            found.push(format!("line {line}: `{name}!` (terminal I/O)"));
        }
    }
    for (line, ty) in &paths.random_hashers {
        found.push(format!("line {line}: `{ty}` with the default hasher (ambient randomness: RandomState)"));
    }
    found
}

/// True if `path` names what `pattern` forbids: a path pattern
/// (`std::net`, `HashMap::new`) anywhere in it as consecutive segments; a
/// crate name (`tokio`) as its first segment; a type name (`Instant`) as any
/// segment.
fn names_prefix(path: &str, pattern: &str) -> bool {
    let segments: Vec<&str> = path.split("::").collect();
    let wanted: Vec<&str> = pattern.split("::").collect();
    if wanted.len() > 1 {
        segments.windows(wanted.len()).any(|w| w == wanted.as_slice())
    } else if pattern.starts_with(|c: char| c.is_ascii_lowercase()) {
        segments.len() > 1 && segments[0] == pattern
    } else {
        segments.contains(&pattern)
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string() == "test"))
    })
}

/// Every path a file names, with its line; macro names; and `HashMap` /
/// `HashSet` types that take the default (random) hasher.
#[derive(Default)]
struct Paths {
    found: Vec<(usize, String)>,
    macros: Vec<(usize, String)>,
    random_hashers: Vec<(usize, String)>,
}

impl Paths {
    fn add(&mut self, line: usize, path: String) {
        self.found.push((line, path));
    }

    fn use_tree(&mut self, prefix: &str, tree: &syn::UseTree) {
        let join = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}::{name}") };
        match tree {
            syn::UseTree::Path(p) => self.use_tree(&join(&p.ident.to_string()), &p.tree),
            syn::UseTree::Name(n) => self.add(n.ident.span().start().line, join(&n.ident.to_string())),
            syn::UseTree::Rename(r) => self.add(r.ident.span().start().line, join(&r.ident.to_string())),
            syn::UseTree::Glob(g) => self.add(g.star_token.spans[0].start().line, join("*")),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
        }
    }

    /// Paths hidden in a macro call's tokens: runs of `ident :: ident ...`.
    fn tokens(&mut self, tokens: TokenStream) {
        let mut run: Vec<String> = Vec::new();
        let mut line = 0;
        let mut colons = 0;
        let flush = |run: &mut Vec<String>, line: usize, me: &mut Paths| {
            if !run.is_empty() {
                me.add(line, run.join("::"));
                run.clear();
            }
        };
        for tree in tokens {
            match tree {
                TokenTree::Ident(ident) => {
                    if colons != 2 {
                        flush(&mut run, line, self);
                        line = ident.span().start().line;
                    }
                    run.push(ident.to_string());
                    colons = 0;
                }
                TokenTree::Punct(p) if p.as_char() == ':' => colons += 1,
                TokenTree::Group(g) => {
                    flush(&mut run, line, self);
                    colons = 0;
                    self.tokens(g.stream());
                }
                _ => {
                    flush(&mut run, line, self);
                    colons = 0;
                }
            }
        }
        flush(&mut run, line, self);
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test_only(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_test_only(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree("", &u.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let text: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = path.segments.first().map_or(0, |s| s.ident.span().start().line);
        if let Some(last) = path.segments.last() {
            let name = last.ident.to_string();
            if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
                let types = args.args.iter().filter(|a| matches!(a, syn::GenericArgument::Type(_))).count();
                if (name == "HashMap" && types == 2) || (name == "HashSet" && types == 1) {
                    self.random_hashers.push((line, name));
                }
            }
        }
        self.add(line, text.join("::"));
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if let Some(name) = mac.path.segments.last() {
            self.macros.push((name.ident.span().start().line, name.ident.to_string()));
        }
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}
