//! Model test: random operation sequences run against the filesystem core and against a
//! simple in-memory model of a directory tree; after every sequence (and a remount) the two
//! must agree and `daxfs check` must be clean.

use std::collections::BTreeMap;
use std::sync::Arc;

use daxfs::check;
use daxfs::fs::{Cred, Fs, FsOptions, RenameFlags, SetAttr};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Mkdir(u8),
    Write {
        file: u8,
        off: u16,
        len: u16,
        byte: u8,
    },
    Truncate {
        file: u8,
        size: u32,
    },
    Unlink(u8),
    Rmdir(u8),
    Rename {
        from: u8,
        to: u8,
    },
    Link {
        from: u8,
        to: u8,
    },
    Punch {
        file: u8,
        off: u16,
        len: u16,
    },
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::Create),
        1 => any::<u8>().prop_map(Op::Mkdir),
        5 => (any::<u8>(), any::<u16>(), 1..20000u16, any::<u8>())
            .prop_map(|(file, off, len, byte)| Op::Write { file, off, len, byte }),
        1 => (any::<u8>(), 0..200_000u32).prop_map(|(file, size)| Op::Truncate { file, size }),
        2 => any::<u8>().prop_map(Op::Unlink),
        1 => any::<u8>().prop_map(Op::Rmdir),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => (any::<u8>(), any::<u16>(), 1..20000u16).prop_map(|(file, off, len)| Op::Punch { file, off, len }),
        1 => Just(Op::Remount),
    ]
}

/// Names live in two directories: the root and "sub" (created up front). Name n goes to
/// the root when even, to sub when odd.
fn place(n: u8) -> (bool, String) {
    (n % 2 == 1, format!("n{}", n % 16))
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File(usize), // index into contents (hard links share)
    Dir,
}

struct Model {
    names: BTreeMap<(bool, String), Node>,
    contents: Vec<Vec<u8>>,
}

fn cred() -> Cred {
    Cred {
        uid: 0,
        gid: 0,
        pid: 1,
        groups: vec![],
        cap_linux_immutable: None,
    }
}

fn run(ops: Vec<Op>) {
    let dev = Arc::new(Device::memfd(64 << 20).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let mut fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let root = fs.root_ino();
    let sub = fs.mkdir(root, b"sub", 0o755, &cred()).unwrap().ino;
    let dir = |s: bool| if s { sub } else { root };
    let mut m = Model {
        names: BTreeMap::new(),
        contents: Vec::new(),
    };
    for op in ops {
        match op {
            Op::Create(n) | Op::Mkdir(n) => {
                let (s, name) = place(n);
                let is_dir = matches!(op, Op::Mkdir(_));
                let r = if is_dir {
                    fs.mkdir(dir(s), name.as_bytes(), 0o755, &cred())
                } else {
                    fs.mknod(dir(s), name.as_bytes(), libc::S_IFREG | 0o644, 0, &cred())
                };
                if m.names.contains_key(&(s, name.clone())) {
                    assert_eq!(r.unwrap_err().errno(), libc::EEXIST);
                } else {
                    r.unwrap();
                    let node = if is_dir {
                        Node::Dir
                    } else {
                        m.contents.push(Vec::new());
                        Node::File(m.contents.len() - 1)
                    };
                    m.names.insert((s, name), node);
                }
            }
            Op::Write {
                file,
                off,
                len,
                byte,
            } => {
                let (s, name) = place(file);
                if let Some(Node::File(i)) = m.names.get(&(s, name.clone())) {
                    let ino = fs.lookup(dir(s), name.as_bytes()).unwrap().ino;
                    let off = off as usize * 3;
                    let data = vec![byte; len as usize];
                    fs.write(ino, off as u64, &data, false).unwrap();
                    let c = &mut m.contents[*i];
                    if c.len() < off + data.len() {
                        c.resize(off + data.len(), 0);
                    }
                    c[off..off + data.len()].copy_from_slice(&data);
                }
            }
            Op::Truncate { file, size } => {
                let (s, name) = place(file);
                if let Some(Node::File(i)) = m.names.get(&(s, name.clone())) {
                    let ino = fs.lookup(dir(s), name.as_bytes()).unwrap().ino;
                    fs.setattr(
                        ino,
                        &SetAttr {
                            size: Some(size as u64),
                            ..Default::default()
                        },
                        &cred(),
                    )
                    .unwrap();
                    m.contents[*i].resize(size as usize, 0);
                }
            }
            Op::Punch { file, off, len } => {
                let (s, name) = place(file);
                if let Some(Node::File(i)) = m.names.get(&(s, name.clone())) {
                    let ino = fs.lookup(dir(s), name.as_bytes()).unwrap().ino;
                    let off = off as usize * 3;
                    fs.fallocate(ino, off as u64, len as u64, 0x03).unwrap();
                    let c = &mut m.contents[*i];
                    let end = (off + len as usize).min(c.len());
                    if off < end {
                        c[off..end].fill(0);
                    }
                }
            }
            Op::Unlink(n) | Op::Rmdir(n) => {
                let (s, name) = place(n);
                let want_dir = matches!(op, Op::Rmdir(_));
                let r = if want_dir {
                    fs.rmdir(dir(s), name.as_bytes())
                } else {
                    fs.unlink(dir(s), name.as_bytes())
                };
                match m.names.get(&(s, name.clone())) {
                    None => assert_eq!(r.unwrap_err().errno(), libc::ENOENT),
                    Some(Node::Dir) if !want_dir => {
                        assert_eq!(r.unwrap_err().errno(), libc::EISDIR)
                    }
                    Some(Node::File(_)) if want_dir => {
                        assert_eq!(r.unwrap_err().errno(), libc::ENOTDIR)
                    }
                    Some(_) => {
                        r.unwrap();
                        m.names.remove(&(s, name));
                    }
                }
            }
            Op::Rename { from, to } => {
                let (fs_, fname) = place(from);
                let (ts, tname) = place(to);
                let r = fs.rename(
                    dir(fs_),
                    fname.as_bytes(),
                    dir(ts),
                    tname.as_bytes(),
                    RenameFlags::default(),
                );
                let src = m.names.get(&(fs_, fname.clone())).cloned();
                let dst = m.names.get(&(ts, tname.clone())).cloned();
                match (src, dst) {
                    (None, _) => assert_eq!(r.unwrap_err().errno(), libc::ENOENT),
                    (Some(_), _) if (fs_, &fname) == (ts, &tname) => r.unwrap(),
                    (Some(Node::Dir), Some(Node::File(_))) => {
                        assert_eq!(r.unwrap_err().errno(), libc::ENOTDIR)
                    }
                    (Some(Node::File(_)), Some(Node::Dir)) => {
                        assert_eq!(r.unwrap_err().errno(), libc::EISDIR)
                    }
                    (Some(Node::File(a)), Some(Node::File(b))) if a == b => r.unwrap(),
                    (Some(n), _) => {
                        r.unwrap();
                        m.names.remove(&(fs_, fname));
                        m.names.insert((ts, tname), n);
                    }
                }
            }
            Op::Link { from, to } => {
                let (fs_, fname) = place(from);
                let (ts, tname) = place(to);
                if let Some(Node::File(i)) = m.names.get(&(fs_, fname.clone())).cloned() {
                    let ino = fs.lookup(dir(fs_), fname.as_bytes()).unwrap().ino;
                    let r = fs.link(ino, dir(ts), tname.as_bytes());
                    if m.names.contains_key(&(ts, tname.clone())) {
                        assert_eq!(r.unwrap_err().errno(), libc::EEXIST);
                    } else {
                        r.unwrap();
                        m.names.insert((ts, tname), Node::File(i));
                    }
                }
            }
            Op::Remount => {
                fs.unmount().unwrap();
                drop(fs);
                let r = check::check(&dev).unwrap();
                assert!(r.problems.is_empty(), "{:?}", r.problems);
                fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
            }
        }
    }
    // Compare everything.
    for ((s, name), node) in &m.names {
        let a = fs.lookup(dir(*s), name.as_bytes()).unwrap();
        match node {
            Node::Dir => assert_eq!(a.kind, daxfs::fs::FileKind::Dir),
            Node::File(i) => {
                assert_eq!(a.size, m.contents[*i].len() as u64, "{name}");
                let got = fs
                    .read(a.ino, 0, m.contents[*i].len() as u32, |b| b.to_vec())
                    .unwrap();
                assert!(got == m.contents[*i], "contents of {name} differ");
            }
        }
    }
    for s in [false, true] {
        let mut listed = Vec::new();
        fs.readdir(dir(s), 0, &mut |e| {
            if e.name != b"." && e.name != b".." && !(e.name == b"sub" && !s) {
                listed.push(String::from_utf8_lossy(&e.name).into_owned());
            }
            false
        })
        .unwrap();
        listed.sort();
        let want: Vec<String> = m
            .names
            .keys()
            .filter(|(ss, _)| *ss == s)
            .map(|(_, n)| n.clone())
            .collect();
        assert_eq!(listed, want);
    }
    fs.unmount().unwrap();
    drop(fs);
    let r = check::check(&dev).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
