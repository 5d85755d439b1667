//! Write the seed corpora of the fuzz targets: `cargo run --release --example fuzz_seeds
//! [DIR]` (default `fuzz/corpus`) makes a real image (files, directories, a directory
//! whose hash index has interior nodes, xattrs, a file with an extent B+tree, records in
//! the log, an open unlinked file), cuts each metadata block kind out of it for its
//! target (`daxfs::testing::fuzzing::seeds`) and writes them as DIR/TARGET/seed-N.

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let dir = std::path::Path::new(&dir);
    for (target, seeds) in daxfs::testing::fuzzing::seeds() {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for (i, s) in seeds.iter().enumerate() {
            let p = d.join(format!("seed-{i}"));
            std::fs::write(&p, s).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        println!("{target}: {} seeds", seeds.len());
    }
}
