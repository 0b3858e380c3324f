use raftkv::sim::scenario::Scenario;
fn main() {
    let seed: u64 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1);
    let s = Scenario::new("basic", 1, 5);
    let mut c = s.sim_config(seed);
    c.trace = std::env::var("TRACE").is_ok();
    let t = std::time::Instant::now();
    match s.run(c) {
        Ok(o) => println!("ok: {:?} ops={} vt={}ms in {:?}", o.stats, o.history.ops.len(), o.virtual_us/1000, t.elapsed()),
        Err(f) => println!("FAIL {f}"),
    }
}
