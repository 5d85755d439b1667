//! Core-only microbenchmark (no FUSE): creates, stats and 4 KiB overwrites per second on a
//! memfd. `cargo run --release --example corebench`.
use std::sync::Arc;
use std::time::Instant;

use daxfs::fs::{Cred, Fs, FsOptions};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;

fn main() {
    let n = 20_000;
    let dev = Arc::new(Device::memfd(1 << 30).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev, &FsOptions::default()).unwrap();
    let cred = Cred::default();
    let d = fs.mkdir(fs.root_ino(), b"d", 0o755, &cred).unwrap().ino;
    let t = Instant::now();
    let mut inos = Vec::new();
    for i in 0..n {
        inos.push(
            fs.mknod(
                d,
                format!("f{i}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                &cred,
            )
            .unwrap()
            .ino,
        );
    }
    println!("create: {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    for i in 0..n {
        fs.lookup(d, format!("f{i}").as_bytes()).unwrap();
    }
    println!("lookup: {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
    let f = inos[0];
    fs.write(f, 0, &vec![1u8; 64 << 20], false).unwrap();
    let t = Instant::now();
    let buf = [7u8; 4096];
    for i in 0..n as u64 {
        fs.write(f, (i * 7919 % 16384) * 4096, &buf, false).unwrap();
    }
    println!(
        "4k overwrite: {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let g = inos[1];
    let t = Instant::now();
    for i in 0..n as u64 {
        fs.write(g, (i * 7919 % 16384) * 4096, &buf, false).unwrap();
    }
    println!(
        "4k write into holes: {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for i in 0..n {
        fs.unlink(d, format!("f{i}").as_bytes()).unwrap();
    }
    println!("unlink: {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
}
