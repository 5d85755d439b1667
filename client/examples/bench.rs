//! A quick measure of the direct path: `bench FILE [OPS [TMPFS_FILE]]` (FILE on a daxfs mount, DAX).
//! 4 KiB overwrites through a mapping with persist per operation, 4 KiB appends with one
//! fsync at the end, and for comparison 4 KiB pwrite through the mount (O_DIRECT off).
//! Prints ops/s and ns/op for each.

use std::os::unix::fs::FileExt;
use std::time::Instant;

fn report(what: &str, n: u64, t: std::time::Duration) {
    let ns = t.as_nanos() as f64 / n as f64;
    println!("{what:<40} {:>12.0} ops/s {:>10.0} ns/op", 1e9 / ns, ns);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let file = args.get(1).ok_or("usage: bench FILE [OPS [TMPFS_FILE]]")?;
    let ops: u64 = args.get(2).map_or(Ok(100_000), |s| s.parse())?;
    let client = daxfs_client::Client::connect(file)?;
    let f = client.open(file, true)?;
    println!(
        "mode {:?}, persistence {:?}",
        f.mode(),
        client.persistence()
    );
    let buf = vec![0x5au8; 4096];
    let span = 16u64 << 20;
    // DAXFS_BENCH=append: only the append phase (for profiling).
    let only_append = std::env::var("DAXFS_BENCH").is_ok_and(|v| v == "append");
    let m = f.map(0, span, true)?;
    let t = Instant::now();
    for i in 0..ops {
        let off = (i * 4096) % span;
        m.write_at(off, &buf)?;
        m.persist(off, 4096)?;
    }
    report("client 4 KiB overwrite + persist", ops, t.elapsed());
    drop(m);
    let log = format!("{file}.append");
    std::fs::write(&log, b"")?;
    let lf = client.open(&log, true)?;
    let t = Instant::now();
    for _ in 0..ops {
        lf.append(&buf)?;
    }
    lf.fsync()?;
    report("client 4 KiB append, one fsync", ops, t.elapsed());
    if only_append {
        return Ok(());
    }
    let pf = std::fs::OpenOptions::new().write(true).open(file)?;
    let t = Instant::now();
    for i in 0..ops {
        pf.write_at(&buf, (i * 4096) % span)?;
    }
    report("pwrite 4 KiB through the mount", ops, t.elapsed());
    if let Some(tmp) = args.get(3) {
        let tf = std::fs::File::create(tmp)?;
        let t = Instant::now();
        for i in 0..ops {
            tf.write_at(&buf, (i * 4096) % span)?;
        }
        report("pwrite 4 KiB on TMPFS_FILE", ops, t.elapsed());
    }
    Ok(())
}
