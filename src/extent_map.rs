//! The in-core extent map of a file's data fork: file block offset -> device block range.
//!
//! Every in-core inode holds its mapping decoded here; the media form (inline list or bmbt)
//! follows it through `take_changes`, which yields the net record changes since the last
//! call (each touched key's original value is remembered on first touch and compared to the
//! current one). Invariants: extents never overlap, have 1..=EXTENT_LEN_MAX blocks, and
//! neighbours that could merge (contiguous in file and device, same written state, within
//! the cap) are merged.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub fileoff: u64,
    pub startblock: u64,
    pub len: u64,
    pub unwritten: bool,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.fileoff + self.len
    }
}

pub const EXTENT_LEN_MAX: u64 = 1 << 21;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Remove(u64),
    Insert(Extent),
    Update(Extent),
}

#[derive(Debug, Clone, Default)]
pub struct ExtentMap {
    map: BTreeMap<u64, Extent>,
    orig: BTreeMap<u64, Option<Extent>>,
}

fn mergeable(a: &Extent, b: &Extent) -> bool {
    a.end() == b.fileoff
        && a.startblock + a.len == b.startblock
        && a.unwritten == b.unwritten
        && a.len + b.len <= EXTENT_LEN_MAX
}

impl ExtentMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_extents(exts: impl IntoIterator<Item = Extent>) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        let mut prev_end = 0u64;
        let mut first = true;
        let mut v: Vec<Extent> = exts.into_iter().collect();
        v.sort_by_key(|e| e.fileoff);
        for e in v {
            if e.len == 0 || e.len > EXTENT_LEN_MAX {
                return Err(format!(
                    "extent at file block {} has length {}",
                    e.fileoff, e.len
                ));
            }
            if e.fileoff.checked_add(e.len).is_none() || e.startblock.checked_add(e.len).is_none() {
                return Err(format!("extent at file block {} overflows", e.fileoff));
            }
            if !first && e.fileoff < prev_end {
                return Err(format!(
                    "extent at file block {} overlaps the previous one",
                    e.fileoff
                ));
            }
            first = false;
            prev_end = e.end();
            map.insert(e.fileoff, e);
        }
        Ok(ExtentMap {
            map,
            orig: BTreeMap::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Extent> {
        self.map.values()
    }
    pub fn mapped_blocks(&self) -> u64 {
        self.map.values().map(|e| e.len).sum()
    }

    fn touch(&mut self, key: u64) {
        let cur = self.map.get(&key).copied();
        self.orig.entry(key).or_insert(cur);
    }
    fn put(&mut self, e: Extent) {
        self.touch(e.fileoff);
        self.map.insert(e.fileoff, e);
    }
    fn del(&mut self, key: u64) -> Option<Extent> {
        self.touch(key);
        self.map.remove(&key)
    }

    pub fn find(&self, off: u64) -> Option<Extent> {
        let (_, e) = self.map.range(..=off).next_back()?;
        (off < e.end()).then_some(*e)
    }

    pub fn range(&self, off: u64, len: u64) -> Vec<Extent> {
        let end = off.saturating_add(len);
        let mut out = Vec::new();
        let start_key = self.find(off).map_or(off, |e| e.fileoff);
        for e in self.map.range(start_key..end).map(|(_, e)| *e) {
            let s = e.fileoff.max(off);
            let t = e.end().min(end);
            if s < t {
                out.push(Extent {
                    fileoff: s,
                    startblock: e.startblock + (s - e.fileoff),
                    len: t - s,
                    unwritten: e.unwritten,
                });
            }
        }
        out
    }

    pub fn next_mapped(&self, off: u64) -> Option<u64> {
        if let Some(e) = self.find(off) {
            return Some(off.max(e.fileoff));
        }
        self.map.range(off..).next().map(|(k, _)| *k)
    }

    /// Split the extent containing `at` (if it starts before `at`) so one starts at `at`.
    fn split_at(&mut self, at: u64) {
        if let Some(e) = self.find(at) {
            if e.fileoff < at {
                let left = Extent {
                    len: at - e.fileoff,
                    ..e
                };
                let right = Extent {
                    fileoff: at,
                    startblock: e.startblock + (at - e.fileoff),
                    len: e.end() - at,
                    unwritten: e.unwritten,
                };
                self.put(left);
                self.put(right);
            }
        }
    }

    /// Merge the extent starting at `key` with its left and right neighbours if possible.
    fn merge_around(&mut self, key: u64) {
        let Some(mut e) = self.map.get(&key).copied() else {
            return;
        };
        if let Some((_, l)) = self.map.range(..key).next_back().map(|(k, v)| (*k, *v)) {
            if mergeable(&l, &e) {
                self.del(e.fileoff);
                e = Extent {
                    len: l.len + e.len,
                    ..l
                };
                self.put(e);
            }
        }
        if let Some(r) = self.map.get(&e.end()).copied() {
            if mergeable(&e, &r) {
                self.del(r.fileoff);
                e.len += r.len;
                self.put(e);
            }
        }
    }

    pub fn insert(&mut self, ext: Extent) {
        debug_assert!(ext.len > 0 && ext.len <= EXTENT_LEN_MAX);
        debug_assert!(
            self.range(ext.fileoff, ext.len).is_empty(),
            "insert over a mapped range"
        );
        self.put(ext);
        self.merge_around(ext.fileoff);
    }

    pub fn remove_range(&mut self, off: u64, len: u64) -> Vec<(u64, u64)> {
        let end = off.saturating_add(len);
        if len == 0 {
            return Vec::new();
        }
        self.split_at(off);
        self.split_at(end);
        let keys: Vec<u64> = self.map.range(off..end).map(|(k, _)| *k).collect();
        let mut freed = Vec::new();
        for k in keys {
            let e = self.del(k).unwrap();
            freed.push((e.startblock, e.len));
        }
        freed
    }

    fn set_state(&mut self, off: u64, len: u64, unwritten: bool) {
        let end = off.saturating_add(len);
        if len == 0 {
            return;
        }
        self.split_at(off);
        self.split_at(end);
        let keys: Vec<u64> = self.map.range(off..end).map(|(k, _)| *k).collect();
        for k in &keys {
            let mut e = self.map[k];
            if e.unwritten != unwritten {
                e.unwritten = unwritten;
                self.put(e);
            }
        }
        for k in keys {
            // May have been merged away already.
            if self.map.contains_key(&k) {
                self.merge_around(k);
            }
        }
        // Edges may now merge with neighbours outside the range.
        if let Some(e) = self.find(off) {
            self.merge_around(e.fileoff);
        }
        if let Some(e) = end.checked_sub(1).and_then(|x| self.find(x)) {
            self.merge_around(e.fileoff);
        }
    }

    pub fn mark_written(&mut self, off: u64, len: u64) {
        self.set_state(off, len, false);
    }

    pub fn mark_unwritten(&mut self, off: u64, len: u64) {
        self.set_state(off, len, true);
    }

    pub fn shift_down(&mut self, off: u64, len: u64) {
        let from = off + len;
        let keys: Vec<u64> = self.map.range(from..).map(|(k, _)| *k).collect();
        for k in keys {
            let e = self.del(k).unwrap();
            self.put(Extent {
                fileoff: e.fileoff - len,
                ..e
            });
        }
        if let Some(e) = self.map.get(&off).copied() {
            self.merge_around(e.fileoff);
        }
    }

    pub fn shift_up(&mut self, off: u64, len: u64) -> Result<(), ()> {
        if let Some((_, last)) = self.map.iter().next_back() {
            if last.end() > off
                && last
                    .end()
                    .checked_add(len)
                    .is_none_or(|x| x > (i64::MAX as u64) / 4096 + 1)
            {
                return Err(());
            }
        }
        self.split_at(off);
        let keys: Vec<u64> = self.map.range(off..).map(|(k, _)| *k).rev().collect();
        for k in keys {
            let e = self.del(k).unwrap();
            self.put(Extent {
                fileoff: e.fileoff + len,
                ..e
            });
        }
        Ok(())
    }

    pub fn next_data(&self, off: u64) -> Option<u64> {
        if let Some(e) = self.find(off) {
            if !e.unwritten {
                return Some(off);
            }
        }
        self.map
            .range(off..)
            .map(|(_, e)| e)
            .find(|e| !e.unwritten)
            .map(|e| e.fileoff.max(off))
    }

    pub fn next_hole(&self, off: u64) -> u64 {
        let mut pos = off;
        loop {
            match self.find(pos) {
                Some(e) if !e.unwritten => pos = e.end(),
                _ => return pos,
            }
        }
    }

    pub fn take_changes(&mut self) -> Vec<Change> {
        let orig = std::mem::take(&mut self.orig);
        let (mut rem, mut upd, mut ins) = (Vec::new(), Vec::new(), Vec::new());
        for (k, old) in orig {
            let new = self.map.get(&k).copied();
            match (old, new) {
                (Some(a), Some(b)) if a == b => {}
                (Some(_), Some(b)) => upd.push(Change::Update(b)),
                (Some(_), None) => rem.push(Change::Remove(k)),
                (None, Some(b)) => ins.push(Change::Insert(b)),
                (None, None) => {}
            }
        }
        rem.extend(upd);
        rem.extend(ins);
        rem
    }

    pub fn clear_changes(&mut self) {
        self.orig.clear();
    }
}
