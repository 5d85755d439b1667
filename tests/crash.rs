//! Crash consistency (issue 3): the crash checker (src/crashcheck.rs) over ACE-style
//! workloads and seeded random sequences, on the tracing device emulating both a DAX
//! mapping (eager in-place writes) and a page-cache mapping (lazy checkpoints).
//!
//! Every crash image a power cut could leave (src/crashsim.rs) is recovered, checked, and
//! held to the oracles: prefix-consistent namespace, sizes, contents since the last
//! durability point, no stale data, idempotent recovery. The default run fits CI; set
//! DAXFS_CRASH_LONG=1 for every combination of sync variants and many more random
//! sequences (or use `cargo run --release --example crashcheck -- --help`).

use daxfs::pmem::device::Persistence;
use daxfs::testing::crashcheck::{self, Config, Summary, Workload};
use daxfs::testing::crashsim::Limits;

fn long() -> bool {
    std::env::var_os("DAXFS_CRASH_LONG").is_some_and(|v| v != "0")
}

fn config(persistence: Persistence, seed: u64) -> Config {
    Config {
        persistence,
        limits: Limits {
            exhaustive: 32,
            samples: 12,
        },
        recovery_crashes: 1,
        seed,
        pending_frees: false,
        mem_limit: None,
    }
}

/// Check each workload in the mode `mode(i)` gives, print the counts, fail on any failure.
fn run(what: &str, work: &[Workload], modes: &dyn Fn(usize) -> Vec<Persistence>) {
    run_with(what, work, modes, &|p, i| config(p, i as u64));
}

fn run_with(
    what: &str,
    work: &[Workload],
    modes: &dyn Fn(usize) -> Vec<Persistence>,
    cfg: &dyn Fn(Persistence, usize) -> Config,
) -> Summary {
    let t = std::time::Instant::now();
    let mut total = Summary::default();
    for (i, w) in work.iter().enumerate() {
        for p in modes(i) {
            total.merge(crashcheck::check_workload(w, &cfg(p, i)));
        }
    }
    eprintln!("{what}: {total} in {:.1?}", t.elapsed());
    assert!(total.images > 0 && total.recovery_images > 0);
    assert!(
        total.failures == 0,
        "{what}: {total}; first failures:\n{}",
        total.reports.join("\n")
    );
    total
}

const BOTH: [Persistence; 2] = [Persistence::Dax, Persistence::PageCache];

#[test]
fn ace_one_operation_each_sync_variant() {
    let work = crashcheck::ace_workloads(1, true);
    assert_eq!(work.len(), crashcheck::catalogue().len() * 5);
    run("one operation x sync variants", &work, &|_| BOTH.to_vec());
}

/// Every free at commit logged as pending and done by a follow-up transaction, the way a
/// free goes when its AG is below one the transaction holds and someone else has it: one
/// operation with every sync variant, both modes, and three crashed recoveries each
/// (recovery itself finishes pending frees).
#[test]
fn ace_one_operation_with_pending_frees() {
    let work = crashcheck::ace_workloads(1, true);
    run_with(
        "one operation x sync variants, pending frees",
        &work,
        &|_| BOTH.to_vec(),
        &|p, i| Config {
            recovery_crashes: 3,
            pending_frees: true,
            ..config(p, i as u64)
        },
    );
}

/// Reclaim running during the workloads (issue 10): a budget of one byte, so every inode
/// load, create and allocating write runs direct reclaim (evicting what is unreferenced)
/// and the background reclaimer writes deferred timestamps back while the trace is taken.
/// Evicted and rebuilt in-core state must not change what is durable: the same oracles.
#[test]
fn ace_one_operation_with_reclaim_running() {
    let work = crashcheck::ace_workloads(1, true);
    let total = run_with(
        "one operation x sync variants, mem budget of one byte",
        &work,
        &|_| BOTH.to_vec(),
        &|p, i| Config {
            mem_limit: Some(1),
            ..config(p, i as u64)
        },
    );
    assert!(
        total.reclaim_direct > 0 && total.reclaim_freed > 0,
        "{total}"
    );
}

/// Two operations, in both modes: the default run gives each pair one combination of sync
/// variants (rotating through all 25), the long run every combination.
fn two_operations(half: usize) {
    let work = crashcheck::ace_workloads(2, long());
    let n = crashcheck::catalogue().len();
    if !long() {
        assert_eq!(work.len(), n * n);
    }
    let mine: Vec<Workload> = work
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == half)
        .map(|(_, w)| w)
        .collect();
    run(
        &format!("two operations (part {})", half + 1),
        &mine,
        &|_| BOTH.to_vec(),
    );
}

#[test]
fn ace_two_operations_part1() {
    two_operations(0);
}

#[test]
fn ace_two_operations_part2() {
    two_operations(1);
}

#[test]
fn random_sequences() {
    let (n, len) = if long() { (1000, 24) } else { (40, 12) };
    let work = crashcheck::random_workloads(n, len, 0x5eed);
    run("random sequences", &work, &|_| BOTH.to_vec());
}

/// Direct-access client stores (issue 9): a client appends through a write lease past
/// EOF, stores through the mapping, persists and commits the size; or overwrites and
/// persists. Crashed at every fence, in both device modes: no stale data, no size ahead
/// of its data, everything persisted and committed present (`client_oracle`).
#[test]
fn dax_client_stores() {
    let work = crashcheck::dax_workloads();
    assert_eq!(work.len(), 30);
    run("dax client stores", &work, &|_| BOTH.to_vec());
}
