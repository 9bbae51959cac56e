//! "Spawns no threads, never spins": this binary holds one test, so the process's thread
//! count is the harness's plus this test's own, and must be the same before a model is
//! loaded and after it has served requests on every CPU engine; and the process must burn
//! (almost) no CPU while it idles between requests. Linux only (/proc/self).

#![cfg(target_os = "linux")]

use std::time::Duration;

use promise_rt::{Bundle, CpuEngine, Device, LoadOptions, Model, SearchConfig};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// utime + stime of the whole process, in clock ticks (/proc/self/stat fields 14 and 15).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // the command name (field 2) is in parentheses and may hold spaces: split after it
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn requests_spawn_no_threads_and_an_idle_session_burns_no_cpu() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/ml1m");
    let before = threads();
    let mut engines = vec![CpuEngine::Fused];
    if cfg!(feature = "tract") {
        engines.push(CpuEngine::Tract);
    }
    for engine in engines {
        let bundle = Bundle::open(dir).unwrap();
        let opts = LoadOptions::default().with_cpu_engine(engine);
        let model = Model::load_with(&bundle, Device::Cpu, &opts).unwrap();
        let mut session = model.session(SearchConfig::default()).unwrap();
        session.warmup().unwrap();
        for h in [&[12u32, 7, 99][..], &[1, 2, 3, 4, 5], &[318, 1024]] {
            assert_eq!(session.recommend(h).unwrap().len(), 10);
        }
        assert_eq!(
            threads(),
            before,
            "{engine:?}: the process has {} threads after load and requests, {before} before",
            threads()
        );
        // idle with a live model and session: no thread of ours may run meanwhile
        let t0 = cpu_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let spent = cpu_ticks() - t0;
        // clock ticks are 10 ms: 500 ms of spinning would be ~50; allow scheduler noise
        assert!(
            spent <= 3,
            "{engine:?}: {spent} ticks of CPU while idle for 500 ms"
        );
        drop(session);
        drop(model);
        assert_eq!(threads(), before, "{engine:?}: threads after unload");
    }
}
