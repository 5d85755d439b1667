//! The crash checker as a command, for runs longer than the test suite's:
//!
//!     cargo run --release --example crashcheck -- [--depth 1|2] [--all-variants]
//!         [--random N] [--random-len L] [--seed S] [--mode dax|pagecache|both]
//!         [--exhaustive N] [--samples N] [--filter TEXT] [--pending-frees]
//!
//! Prints workloads run, crash images checked and failures (the first ones described);
//! exits 1 when anything failed.

use daxfs::pmem::device::Persistence;
use daxfs::testing::crashcheck::{self, Config, Summary};
use daxfs::testing::crashsim::Limits;

fn main() {
    let mut depth = 1usize;
    let mut all_variants = false;
    let mut random = 0usize;
    let mut random_len = 8usize;
    let mut seed = 1u64;
    let mut modes = vec![Persistence::Dax, Persistence::PageCache];
    let mut limits = Limits {
        exhaustive: 32,
        samples: 12,
    };
    let mut filter = String::new();
    let mut pending_frees = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let val = |i: &mut usize| {
        *i += 1;
        args.get(*i).cloned().unwrap_or_else(|| {
            eprintln!("{} needs a value", args[*i - 1]);
            std::process::exit(2)
        })
    };
    let num = |s: String| -> u64 {
        s.parse().unwrap_or_else(|_| {
            eprintln!("not a number: {s}");
            std::process::exit(2)
        })
    };
    while i < args.len() {
        match args[i].as_str() {
            "--depth" => depth = num(val(&mut i)) as usize,
            "--all-variants" => all_variants = true,
            "--random" => random = num(val(&mut i)) as usize,
            "--random-len" => random_len = num(val(&mut i)) as usize,
            "--seed" => seed = num(val(&mut i)),
            "--exhaustive" => limits.exhaustive = num(val(&mut i)),
            "--samples" => limits.samples = num(val(&mut i)) as usize,
            "--filter" => filter = val(&mut i),
            "--pending-frees" => pending_frees = true,
            "--mode" => {
                modes = match val(&mut i).as_str() {
                    "dax" => vec![Persistence::Dax],
                    "pagecache" => vec![Persistence::PageCache],
                    "both" => vec![Persistence::Dax, Persistence::PageCache],
                    m => {
                        eprintln!("unknown mode {m} (dax, pagecache, both)");
                        std::process::exit(2)
                    }
                }
            }
            a => {
                eprintln!("unknown argument {a}");
                std::process::exit(2)
            }
        }
        i += 1;
    }
    let mut work = if depth == 0 {
        Vec::new()
    } else {
        crashcheck::ace_workloads(depth, all_variants)
    };
    work.extend(crashcheck::random_workloads(random, random_len, seed));
    work.retain(|w| w.name.contains(&filter));
    let t = std::time::Instant::now();
    let mut total = Summary::default();
    let verbose = std::env::var_os("DAXFS_CRASH_VERBOSE").is_some();
    for (n, w) in work.iter().enumerate() {
        if verbose {
            eprintln!("{}: {:?}", w.name, w.ops);
        }
        for &persistence in &modes {
            let cfg = Config {
                persistence,
                limits,
                recovery_crashes: 1,
                seed: seed ^ n as u64,
                pending_frees,
            };
            let s = crashcheck::check_workload(w, &cfg);
            for r in &s.reports {
                eprintln!("FAIL {r}");
            }
            total.merge(s);
        }
        if (n + 1) % 50 == 0 {
            eprintln!("{}/{}: {total} ({:.0?})", n + 1, work.len(), t.elapsed());
        }
    }
    println!("{total} in {:.1?}", t.elapsed());
    if total.failures > 0 {
        std::process::exit(1);
    }
}
