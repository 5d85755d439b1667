//! Crash points from the tracing device: a workload runs on a traced memfd; for every fence
//! in its trace, and for a point half-way between each pair of fences, the image a power
//! cut could leave (every store up to that point, none after) is mounted (log recovery),
//! checked, and compared with what had completed. A first step towards the full crash
//! checker of issue 3 (which adds unflushed-store subsets and semantic oracles per op).

use std::sync::Arc;

use daxfs::check;
use daxfs::device::{Device, TraceOp};
use daxfs::fs::{Cred, Fs, FsOptions, RenameFlags, SetAttr, XattrFlags};
use daxfs::mkfs::{self, MkfsOptions};

const SIZE: u64 = 16 << 20;

fn cred() -> Cred {
    Cred::default()
}

/// The workload; returns after each step a name that must exist once the step completed.
fn workload(fs: &Fs, done: &mut Vec<(usize, &'static str)>, trace_len: &dyn Fn() -> usize) {
    let r = fs.root_ino();
    let d = fs.mkdir(r, b"dir", 0o755, &cred()).unwrap().ino;
    done.push((trace_len(), "dir"));
    let f = fs
        .mknod(d, b"file", libc::S_IFREG | 0o644, 0, &cred())
        .unwrap()
        .ino;
    fs.write(f, 0, &vec![7u8; 20_000], false).unwrap();
    fs.fsync(f, false).unwrap();
    done.push((trace_len(), "dir/file"));
    for i in 0..12 {
        let g = fs
            .mknod(
                d,
                format!("g{i}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                &cred(),
            )
            .unwrap()
            .ino;
        fs.write(g, (i * 4096) as u64, b"hello", false).unwrap();
    }
    done.push((trace_len(), "dir/g11"));
    fs.rename(d, b"file", r, b"moved", RenameFlags::default())
        .unwrap();
    done.push((trace_len(), "moved"));
    fs.setxattr(f, b"user.k", b"v", XattrFlags::default())
        .unwrap();
    fs.setattr(
        f,
        &SetAttr {
            size: Some(5000),
            ..Default::default()
        },
        &cred(),
    )
    .unwrap();
    fs.fallocate(f, 65536, 65536, 0).unwrap();
    fs.symlink(r, b"link", &[b'x'; 600], &cred()).unwrap();
    done.push((trace_len(), "link"));
    for i in 0..12 {
        fs.unlink(d, format!("g{i}").as_bytes()).unwrap();
    }
    fs.rmdir(r, b"dir").unwrap();
    fs.sync().unwrap();
}

fn lookup_path(fs: &Fs, path: &str) -> bool {
    let mut ino = fs.root_ino();
    for c in path.split('/') {
        match fs.lookup(ino, c.as_bytes()) {
            Ok(a) => ino = a.ino,
            Err(_) => return false,
        }
    }
    true
}

#[test]
fn every_fence_recovers_to_a_clean_filesystem() {
    let mut raw = Device::memfd(SIZE).unwrap();
    raw.enable_trace();
    let dev = Arc::new(raw);
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let mut base = vec![0u8; SIZE as usize];
    dev.read(0, &mut base);
    dev.take_trace();
    // Ops are recorded in one shared trace; remember its length at each step.
    let recorded = std::cell::RefCell::new(Vec::new());
    let len = || {
        recorded.borrow_mut().extend(dev.take_trace());
        recorded.borrow().len()
    };
    let mut done = Vec::new();
    workload(&fs, &mut done, &len);
    len();
    drop(fs);
    let trace = recorded.into_inner();
    let fences: Vec<usize> = trace
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, TraceOp::Fence))
        .map(|(i, _)| i)
        .collect();
    assert!(
        fences.len() > 50,
        "the workload fenced {} times",
        fences.len()
    );
    // Crash points: right after each fence, and half-way through the stores after it.
    let mut points = Vec::new();
    let mut prev = 0;
    for &f in &fences {
        points.push((prev + f) / 2);
        points.push(f + 1);
        prev = f + 1;
    }
    let crashed = Arc::new(Device::memfd(SIZE).unwrap());
    let mut img = base.clone();
    let mut applied = 0;
    let mut checked = 0;
    for &p in &points {
        for op in &trace[applied..p] {
            if let TraceOp::Store { off, data } = op {
                img[*off as usize..*off as usize + data.len()].copy_from_slice(data);
            }
        }
        applied = p;
        crashed.write(0, &img);
        // Recover twice: a crash during recovery must recover again.
        for round in 0..2 {
            let fs = Fs::mount(crashed.clone(), &FsOptions::default())
                .unwrap_or_else(|e| panic!("crash point {p} (round {round}): mount failed: {e}"));
            for (at, name) in &done {
                // A step's last fence lies before the recorded trace length at its end.
                if *at <= p && !["dir", "dir/file", "dir/g11"].contains(name) {
                    assert!(
                        lookup_path(&fs, name),
                        "crash point {p}: {name} completed at {at} but is missing"
                    );
                }
            }
            drop(fs);
        }
        let rep = check::check(&crashed).unwrap();
        assert!(
            rep.problems.is_empty(),
            "crash point {p}: {:?}",
            rep.problems
        );
        checked += 1;
    }
    // Stores not yet fenced may or may not have reached the media: for each interval
    // between fences, images with a pseudo-random subset of its stores applied.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut img = base.clone();
    let mut start = 0;
    let mut subsets = 0;
    for &f in &fences {
        for _ in 0..2 {
            let mut trial = img.clone();
            for op in &trace[start..f] {
                if let TraceOp::Store { off, data } = op {
                    if rand() % 2 == 0 {
                        trial[*off as usize..*off as usize + data.len()].copy_from_slice(data);
                    }
                }
            }
            crashed.write(0, &trial);
            let fs = Fs::mount(crashed.clone(), &FsOptions::default())
                .unwrap_or_else(|e| panic!("subset before fence {f}: mount failed: {e}"));
            drop(fs);
            let rep = check::check(&crashed).unwrap();
            assert!(
                rep.problems.is_empty(),
                "subset before fence {f}: {:?}",
                rep.problems
            );
            subsets += 1;
        }
        for op in &trace[start..f] {
            if let TraceOp::Store { off, data } = op {
                img[*off as usize..*off as usize + data.len()].copy_from_slice(data);
            }
        }
        start = f + 1;
    }
    checked += subsets;
    eprintln!(
        "{} fences, {checked} crash images recovered and checked clean",
        fences.len()
    );
}
