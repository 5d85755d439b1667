//! Per-AG locks (src/trans.rs): transactions in different AGs run side by side, a free
//! into an AG below one held and taken by someone else is logged as pending and finished
//! by a follow-up transaction, and a crash with a free pending is finished at mount.
//! Every test ends with `daxfs check` clean.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Duration;

use daxfs::check;
use daxfs::format::{AG_FIRST_FREE, BLOCK_SIZE};
use daxfs::fs::{Cred, Fs, FsOptions, RenameFlags, SetAttr};
use daxfs::log::trans;
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;
use daxfs::pmem::errtag::ErrorTag;
use daxfs::space::alloc;

fn root() -> Cred {
    Cred {
        uid: 0,
        gid: 0,
        pid: 1,
        groups: vec![],
        cap_linux_immutable: None,
    }
}

fn fresh(size: u64, ag_count: u32) -> (Arc<Device>, Arc<Fs>) {
    let dev = Arc::new(Device::memfd(size).unwrap());
    let opts = MkfsOptions {
        ag_count: Some(ag_count),
        ..Default::default()
    };
    mkfs::mkfs(&dev, &opts).unwrap();
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    assert_eq!(fs.mp().sb.ag_count, ag_count);
    (dev, fs)
}

fn assert_clean(dev: &Device) {
    let r = check::check(dev).unwrap();
    assert!(
        r.problems.is_empty(),
        "check found problems:\n{}",
        r.problems.join("\n")
    );
}

fn finish(dev: &Device, fs: Arc<Fs>) {
    fs.unmount().unwrap();
    drop(fs);
    assert_clean(dev);
}

/// The log records recovery would replay now (memfd: lazy checkpoints, so every record
/// since the last checkpoint), with the pending frees each lists.
fn live_records(fs: &Fs) -> Vec<trans::LogRecord> {
    let mp = fs.mp();
    let log_off = mp.sb.log_start * BLOCK_SIZE as u64;
    let read = |pos: u64, buf: &mut [u8]| mp.dev.read(log_off + pos, buf);
    trans::records_to_replay(
        &read,
        mp.sb.log_blocks * BLOCK_SIZE as u64,
        mp.sb.lsn_base,
        mp.sb.total_blocks,
    )
    .unwrap()
}

/// Two blocks allocated and committed, owned by nobody until the test frees them: one in
/// AG 0, one in AG 2.
fn two_loose_blocks(fs: &Fs) -> (u64, u64) {
    let mp = fs.mp();
    let mut tx = mp.trans(2).unwrap();
    let b0 = alloc::alloc_exact_len(&mut tx, mp.fsblock(0, AG_FIRST_FREE), 1).unwrap();
    let b2 = alloc::alloc_exact_len(&mut tx, mp.fsblock(2, AG_FIRST_FREE), 1).unwrap();
    tx.commit().unwrap();
    assert_eq!((mp.ag_of(b0), mp.ag_of(b2)), (0, 2));
    (b0, b2)
}

#[test]
fn free_below_a_held_and_taken_ag_is_pending_then_done() {
    let (dev, fs) = fresh(64 << 20, 4);
    let mp = fs.mp();
    let free_before = mp.free_blocks.load(Relaxed);
    let (b0, b2) = two_loose_blocks(&fs);
    trans::checkpoint(mp).unwrap();
    let (commits0, _, _) = trans::log_counters(mp);
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        // Another transaction holds AG 0 until told to finish.
        s.spawn(move || {
            let mut tx = mp.trans(0).unwrap();
            assert!(tx.try_lock_ag(0, true));
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(tx);
        });
        held_rx.recv().unwrap();
        let mut tx = mp.trans(1).unwrap();
        // This transaction changes AG 2, then frees into AG 2 and into AG 0, which is
        // below it and taken: that free must not wait while AG 2 is held.
        let b = alloc::alloc_exact_len(&mut tx, mp.fsblock(2, AG_FIRST_FREE), 1).unwrap();
        assert!(!tx.try_lock_ag(0, true), "AG 0 is taken and below AG 2");
        tx.defer_free(b, 1);
        tx.defer_free(b2, 1);
        tx.defer_free(b0, 1);
        go_tx.send(()).unwrap();
        // The follow-up waits for AG 0 holding no AG lock, so this returns once the
        // other transaction is gone.
        tx.commit().unwrap();
    });
    let (commits1, _, _) = trans::log_counters(mp);
    assert_eq!(commits1 - commits0, 2, "the commit and its follow-up");
    let recs = live_records(&fs);
    let pendings: Vec<Vec<(u64, u64)>> = recs.iter().map(|r| r.pending.clone()).collect();
    assert_eq!(
        pendings,
        vec![vec![(b0, 1)], vec![]],
        "pending lists per record"
    );
    assert_eq!(mp.free_blocks.load(Relaxed), free_before);
    finish(&dev, fs);
}

#[test]
fn a_crash_with_a_free_pending_finishes_it_at_mount() {
    let (dev, fs) = fresh(64 << 20, 4);
    let (b0, b2) = two_loose_blocks(&fs);
    let mp = fs.mp();
    let free_before = mp.free_blocks.load(Relaxed);
    // Every free goes the pending way, and the second log write from here (the
    // follow-up's) fails half way: the media keeps the record listing both frees as
    // pending, and the filesystem shuts down as after a crash.
    mp.dev.errtags.set(ErrorTag::FreeIntent, 1);
    mp.dev.errtags.set(ErrorTag::LogWrite, 2);
    let mut tx = mp.trans(0).unwrap();
    tx.defer_free(b0, 1);
    tx.defer_free(b2, 1);
    assert!(tx.commit().is_err(), "the follow-up's log write fails");
    assert!(mp.is_shutdown());
    mp.dev.errtags.set(ErrorTag::FreeIntent, 0);
    mp.dev.errtags.set(ErrorTag::LogWrite, 0);
    let pending: Vec<Vec<(u64, u64)>> = live_records(&fs)
        .iter()
        .map(|r| r.pending.clone())
        .collect();
    assert_eq!(pending.last(), Some(&vec![(b0, 1), (b2, 1)]));
    drop(fs);
    // check counts the pending frees as the log's; mount finishes them.
    assert_clean(&dev);
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    assert_eq!(fs.mp().free_blocks.load(Relaxed), free_before + 2);
    assert!(live_records(&fs).is_empty(), "recovery leaves an empty log");
    finish(&dev, fs);
}

/// Threads in their own directories (spread over the AGs) create, write, truncate, punch
/// and unlink, and rename over each other's files, so frees cross AGs; every third free
/// at commit goes the pending way. Then remount, check, and read everything back.
#[test]
fn concurrent_work_across_ags() {
    let (dev, fs) = fresh(256 << 20, 8);
    fs.mp().dev.errtags.set(ErrorTag::FreeIntent, 3);
    let r = fs.root_ino();
    let dirs: Vec<u64> = (0..4)
        .map(|t| {
            fs.mkdir(r, format!("d{t}").as_bytes(), 0o755, &root())
                .unwrap()
                .ino
        })
        .collect();
    let ags: std::collections::BTreeSet<u32> = dirs
        .iter()
        .map(|&d| fs.mp().ag_of(fs.mp().ino_block(d)))
        .collect();
    assert!(ags.len() >= 3, "directories spread over AGs: {ags:?}");
    std::thread::scope(|s| {
        for t in 0..4usize {
            let fs = &fs;
            let dirs = &dirs;
            s.spawn(move || {
                let own = dirs[t];
                let next = dirs[(t + 1) % 4];
                for i in 0..150u64 {
                    let name = format!("f{t}-{i}");
                    let f = fs
                        .mknod(own, name.as_bytes(), libc::S_IFREG | 0o644, 0, &root())
                        .unwrap()
                        .ino;
                    let len = 4096 * (1 + i % 40) as usize;
                    fs.write(f, 0, &vec![(t * 40 + i as usize % 40) as u8; len], false)
                        .unwrap();
                    match i % 5 {
                        0 => {
                            fs.unlink(own, name.as_bytes()).unwrap();
                        }
                        1 => {
                            // Over a name in the next thread's directory: the victim (if
                            // any) is freed from that directory's AG.
                            let _ = fs.rename(
                                own,
                                name.as_bytes(),
                                next,
                                format!("x{}", i % 7).as_bytes(),
                                RenameFlags::default(),
                            );
                        }
                        2 => {
                            let sa = SetAttr {
                                size: Some(4096),
                                ..Default::default()
                            };
                            fs.setattr(f, &sa, &root()).unwrap();
                        }
                        3 => {
                            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                            fs.fallocate(f, 0, len as u64 / 2, mode).unwrap();
                        }
                        _ => {}
                    }
                    fs.forget(f, 1);
                }
            });
        }
    });
    fs.mp().dev.errtags.set(ErrorTag::FreeIntent, 0);
    finish(&dev, fs);
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    for (t, &d) in dirs.iter().enumerate() {
        for i in 0..150u64 {
            let Ok(a) = fs.lookup(d, format!("f{t}-{i}").as_bytes()) else {
                assert!(i % 5 <= 1, "f{t}-{i} is missing");
                continue;
            };
            let want = (t * 40 + i as usize % 40) as u8;
            let len = 4096 * (1 + i % 40);
            let (size, hole) = match i % 5 {
                2 => (4096, 0),
                3 => (len, len / 2),
                _ => (len, 0),
            };
            assert_eq!(a.size, size, "f{t}-{i} size");
            let data = fs.read(a.ino, 0, size as u32, |b| b.to_vec()).unwrap();
            assert!(
                data[..hole as usize].iter().all(|&b| b == 0),
                "f{t}-{i} hole"
            );
            assert!(
                data[hole as usize..].iter().all(|&b| b == want),
                "f{t}-{i} data"
            );
        }
    }
    finish(&dev, fs);
}
