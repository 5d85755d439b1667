//! Allocation scaling over AG locks (no FUSE): each thread works in a directory of its
//! own (new directories rotate over the AGs) creating files, writing 4 KiB into holes of
//! them (every write allocates) and unlinking them. Run on a filesystem with one AG (every
//! allocation and free under one lock, as before per-AG locks) and with 4 AGs, in the same
//! process; prints the median of the rounds and the ratio.
//!
//!     cargo run --release --example agscale -- [--threads 2] [--files 3000] [--rounds 5]

use std::sync::Arc;
use std::time::Instant;

use daxfs::fs::{Cred, Fs, FsOptions};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;

fn round(ag_count: u32, threads: usize, files: usize) -> f64 {
    let dev = Arc::new(Device::memfd(2 << 30).unwrap());
    let opts = MkfsOptions {
        ag_count: Some(ag_count),
        ..Default::default()
    };
    mkfs::mkfs(&dev, &opts).unwrap();
    let fs = Fs::mount(dev, &FsOptions::default()).unwrap();
    let cred = Cred::default();
    let dirs: Vec<u64> = (0..threads)
        .map(|t| {
            fs.mkdir(fs.root_ino(), format!("d{t}").as_bytes(), 0o755, &cred)
                .unwrap()
                .ino
        })
        .collect();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for &d in &dirs {
            let fs = &fs;
            let cred = &cred;
            s.spawn(move || {
                let buf = [7u8; 4096];
                for i in 0..files {
                    let name = format!("f{i}");
                    let f = fs
                        .mknod(d, name.as_bytes(), libc::S_IFREG | 0o644, 0, cred)
                        .unwrap()
                        .ino;
                    for b in 0..4u64 {
                        fs.write(f, b * 2 * 4096, &buf, false).unwrap();
                    }
                    if i % 2 == 1 {
                        fs.unlink(d, format!("f{}", i - 1).as_bytes()).unwrap();
                    }
                    fs.forget(f, 1);
                }
            });
        }
    });
    let ops = threads * files * (1 + 4) + threads * files / 2;
    let rate = ops as f64 / t0.elapsed().as_secs_f64();
    fs.unmount().unwrap();
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let (mut threads, mut files, mut rounds) = (2usize, 3000usize, 5usize);
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        let v = w.get(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("usage: agscale [--threads N] [--files N] [--rounds N]");
            std::process::exit(2)
        });
        match w[0].as_str() {
            "--threads" => threads = v,
            "--files" => files = v,
            "--rounds" => rounds = v,
            _ => {
                eprintln!("usage: agscale [--threads N] [--files N] [--rounds N]");
                std::process::exit(2)
            }
        }
    }
    println!("{threads} threads x {files} files (create, 4 writes into holes, unlink half)");
    let mut res = Vec::new();
    for t in [1, threads] {
        // Alternate the two layouts round by round, so that machine noise hits both.
        let (mut one, mut four) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            one.push(round(1, t, files));
            four.push(round(4, t, files));
        }
        res.push((t, median(one), median(four)));
    }
    println!("threads | 1 AG ops/s | 4 AGs ops/s | 4 AGs / 1 AG");
    for (t, one, four) in &res {
        println!("{t:>7} | {one:>10.0} | {four:>11.0} | {:>12.2}", four / one);
    }
}
