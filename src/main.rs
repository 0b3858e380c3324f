//! The `raftkv` binary. Its argument definitions are in `src/cli/args.rs`
//! and each subcommand is one file of `src/cli/`.

#[cfg(not(loom))]
mod cli;

/// Counts live heap bytes for `INFO`'s `used_memory`.
#[cfg(not(loom))]
#[global_allocator]
static ALLOCATOR: raftkv::server::memory::CountingAllocator = raftkv::server::memory::CountingAllocator;

#[cfg(not(loom))]
fn main() -> std::process::ExitCode {
    cli::args::main()
}

/// Under `--cfg loom` (the loom tests) tokio builds without its sockets, so
/// the networked half of the crate and this binary are left out.
#[cfg(loom)]
fn main() {}
