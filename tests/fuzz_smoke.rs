//! The fuzz targets without cargo-fuzz: every `daxfs::testing::fuzzing` function gets its seeds
//! (cut from a real image) and a few thousand seeded mutations of them in all (bit flips,
//! byte and integer sets, truncations, block swaps). Errors are fine; a panic fails the
//! test, which names the target and writes the input to
//! `target/fuzz-smoke-failures/TARGET-N.bin` (replay it with
//! `cargo fuzz run TARGET FILE` or `daxfs::testing::fuzzing::TARGET(&std::fs::read(FILE)?)`).
//!
//! `DAXFS_FUZZ_SMOKE_SCALE=N` multiplies the iteration counts; `DAXFS_FUZZ_SMOKE_SEED`
//! changes the mutations.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use daxfs::testing::fuzzing;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    7,
    8,
    64,
    255,
    4095,
    4096,
    0x7fff_ffff,
    u32::MAX as u64,
    u64::MAX,
];

/// An offset biased towards the fields: block headers and structure headers sit in the
/// first bytes of each 4 KiB block (and of each 512-byte inode slot).
fn offset(r: &mut Rng, len: usize) -> usize {
    match r.below(4) {
        0 => r.below(len),
        1 => {
            let blocks = len.div_ceil(4096);
            (r.below(blocks) * 4096 + r.below(256)).min(len - 1)
        }
        2 => {
            let slots = len.div_ceil(512);
            (r.below(slots) * 512 + r.below(256)).min(len - 1)
        }
        _ => r.below(len.min(256)),
    }
}

fn mutate(seed: &[u8], r: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + r.below(4) {
        if v.is_empty() {
            v.push(r.next() as u8);
            continue;
        }
        let len = v.len();
        match r.below(7) {
            0 | 1 => {
                let o = offset(r, len);
                v[o] ^= 1 << r.below(8);
            }
            2 => {
                let o = offset(r, len);
                v[o] = [0, 0xff, 0x80, 1, r.next() as u8][r.below(5)];
            }
            3 => {
                // An integer field set to an interesting value (or one near the old value).
                let width = [2usize, 4, 8][r.below(3)];
                let o = offset(r, len) & !(width - 1);
                if o + width <= len {
                    let old = {
                        let mut b = [0u8; 8];
                        b[..width].copy_from_slice(&v[o..o + width]);
                        u64::from_le_bytes(b)
                    };
                    let val = match r.below(3) {
                        0 => INTERESTING[r.below(INTERESTING.len())],
                        1 => old.wrapping_add(1 + r.below(8) as u64),
                        _ => old.wrapping_sub(1 + r.below(8) as u64),
                    };
                    v[o..o + width].copy_from_slice(&val.to_le_bytes()[..width]);
                }
            }
            4 => {
                let n = r.below(len);
                v.truncate(n);
            }
            5 => {
                // Copy a run of bytes elsewhere (entries and records overlap).
                let (a, b) = (r.below(len), r.below(len));
                let n = r.below(64).min(len - a).min(len - b);
                v.copy_within(a..a + n, b);
            }
            _ => {
                let o = offset(r, len);
                let n = (1 + r.below(32)).min(len - o);
                v[o..o + n].fill(0);
            }
        }
    }
    v
}

/// Iterations per target: the single-block targets run in microseconds, the ones that
/// mount an image in about a millisecond.
fn iterations(target: &str) -> usize {
    match target {
        "btree_node" | "dir_block" | "dir_hash" | "xattr_block" => 3000,
        _ => 300,
    }
}

#[test]
fn fuzz_targets_survive_seeded_mutations() {
    let scale: usize = std::env::var("DAXFS_FUZZ_SMOKE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seed: u64 = std::env::var("DAXFS_FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let t0 = Instant::now();
    let seeds = fuzzing::seeds();
    eprintln!("seed images built in {:?}", t0.elapsed());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("fuzz-smoke-failures");
    let mut failures = Vec::new();
    let mut total = 0;
    for &(name, f) in fuzzing::TARGETS {
        let seeds = &seeds.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(!seeds.is_empty(), "no seed for target {name}");
        let mut r = Rng(seed
            ^ name
                .bytes()
                .fold(0u64, |h, c| h.wrapping_mul(31) ^ c as u64));
        let t = Instant::now();
        let n = iterations(name) * scale;
        let mut runs = 0;
        // The inputs that once crashed a target (fuzz/regressions/TARGET/), every seed as
        // is, then mutations of seeds taken in turn.
        let regressions = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions")
            .join(name);
        let mut files: Vec<_> = std::fs::read_dir(&regressions)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for path in files {
            let input = std::fs::read(&path).unwrap();
            runs += 1;
            if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
                failures.push(format!(
                    "{name}: regression input {} panicked",
                    path.display()
                ));
            }
        }
        for i in 0..seeds.len() + n {
            let input = if i < seeds.len() {
                seeds[i].clone()
            } else {
                mutate(&seeds[i % seeds.len()], &mut r)
            };
            runs += 1;
            if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
                std::fs::create_dir_all(&out).unwrap();
                let path = out.join(format!("{name}-{i}.bin"));
                std::fs::write(&path, &input).unwrap();
                failures.push(format!(
                    "{name}: input {i} panicked, saved to {}",
                    path.display()
                ));
                if failures.len() > 20 {
                    break;
                }
            }
        }
        total += runs;
        eprintln!(
            "{name:12} {runs:6} inputs ({} seeds) in {:.2?}",
            seeds.len(),
            t.elapsed()
        );
    }
    eprintln!("{total} inputs in {:.2?}", t0.elapsed());
    assert!(
        failures.is_empty(),
        "{} fuzz inputs panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
