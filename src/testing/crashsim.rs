//! Crash images from a trace of the tracing device (`Device::traced`).
//!
//! The persistence model (DESIGN.md section 1, as x86 with ADR gives it):
//! - a store sits in the CPU cache until its line is written back; a write-back can happen
//!   at any moment (eviction), so a line's persisted contents are its contents after some
//!   prefix of the stores made to it since it was last durable;
//! - `flush(range)` asks for the lines of the range to be written back, `fence()` waits for
//!   every flush asked before it: stores flushed and then fenced are durable;
//! - only aligned 8-byte stores are atomic: a line can also be torn, each 8-byte word of it
//!   persisted at its own prefix.
//!
//! So at a crash just before fence `f`, the image is the durable image (every store flushed
//! and fenced before `f`) plus, per line with stores in flight (not yet durable), a prefix
//! of them. A crash anywhere between two fences is one of those images (a store made before
//! the crash is a prefix of the stores made before the next fence), so crashing before each
//! fence, and at the end of the trace, covers every crash point. Where few combinations are
//! possible all are generated; where many, a bounded seeded sample: the extremes, each line
//! alone, all lines but one, random prefixes, and torn lines.

use std::collections::BTreeMap;

use crate::pmem::device::{Device, TraceOp};

const LINE: u64 = 64;
const WORDS: usize = (LINE / 8) as usize;

/// One piece of a store that falls in one cache line.
#[derive(Debug, Clone, Copy)]
struct Seg {
    /// Index of the store in the trace.
    store: usize,
    /// Offset of this piece in the store's data, and its device offset and length.
    at: usize,
    off: u64,
    len: usize,
    /// Flushed since it was stored: durable at the next fence.
    flushed: bool,
}

/// How much of one line's in-flight stores reached the media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineChoice {
    /// The first n stores, whole.
    Prefix(usize),
    /// Torn: per 8-byte word, the first n stores.
    Words([usize; WORDS]),
}

/// A crash point: just before the fence at `pos` in the trace (or at its end).
pub struct CrashPoint<'a> {
    pub pos: usize,
    trace: &'a [TraceOp],
    durable: &'a [u8],
    /// Lines with stores in flight, each with its stores in order.
    lines: Vec<(u64, Vec<Seg>)>,
}

/// Limits for the images of one crash point.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Generate every combination when there are at most this many.
    pub exhaustive: u64,
    /// Otherwise this many sampled images.
    pub samples: usize,
}

/// A small deterministic generator (xorshift64*), so a failing image can be rebuilt.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

impl CrashPoint<'_> {
    /// Stores in flight (pieces per line, summed).
    pub fn in_flight(&self) -> usize {
        self.lines.iter().map(|(_, s)| s.len()).sum()
    }

    /// Lines with stores in flight.
    pub fn lines(&self) -> usize {
        self.lines.len()
    }

    /// How many distinct whole-line images exist (saturating).
    pub fn combinations(&self) -> u64 {
        self.lines
            .iter()
            .fold(1u64, |acc, (_, s)| acc.saturating_mul(s.len() as u64 + 1))
    }

    /// The images to check at this point: all combinations within `limits.exhaustive`,
    /// else a seeded sample (see the module doc).
    pub fn choices(&self, limits: Limits, rng: &mut Rng) -> Vec<Vec<LineChoice>> {
        let n = self.lines.len();
        let max: Vec<usize> = self.lines.iter().map(|(_, s)| s.len()).collect();
        let total = self.combinations();
        if total <= limits.exhaustive {
            let mut out = Vec::with_capacity(total as usize);
            let mut digits = vec![0usize; n];
            loop {
                out.push(digits.iter().map(|&d| LineChoice::Prefix(d)).collect());
                let mut i = 0;
                while i < n && digits[i] == max[i] {
                    digits[i] = 0;
                    i += 1;
                }
                if i == n {
                    return out;
                }
                digits[i] += 1;
            }
        }
        let none = || vec![LineChoice::Prefix(0); n];
        let all = || {
            max.iter()
                .map(|&m| LineChoice::Prefix(m))
                .collect::<Vec<_>>()
        };
        let mut out = vec![none(), all()];
        while out.len() < limits.samples.max(2) {
            let line = rng.below(n as u64) as usize;
            let c = match out.len() % 5 {
                // One line alone reached the media.
                0 => {
                    let mut c = none();
                    c[line] = LineChoice::Prefix(max[line]);
                    c
                }
                // Every line but one.
                1 => {
                    let mut c = all();
                    c[line] = LineChoice::Prefix(0);
                    c
                }
                // Everything, one line torn.
                2 => {
                    let mut c = all();
                    let mut w = [0usize; WORDS];
                    for x in w.iter_mut() {
                        *x = rng.below(max[line] as u64 + 1) as usize;
                    }
                    c[line] = LineChoice::Words(w);
                    c
                }
                // Random prefixes.
                _ => max
                    .iter()
                    .map(|&m| LineChoice::Prefix(rng.below(m as u64 + 1) as usize))
                    .collect(),
            };
            out.push(c);
        }
        out
    }

    /// Write the image for `choice` to `dev` (same size as the traced device).
    pub fn build(&self, choice: &[LineChoice], dev: &Device) {
        dev.load_image(self.durable);
        self.apply(choice, dev);
    }

    /// `build`, cheaper for the second and later images of one crash point: `dev` must be
    /// a tracing device that held an image of this point (`again`), so only the 4 KiB
    /// pages stored to since (by that image and by whatever mounted it) are restored from
    /// the durable image before `choice` is applied.
    pub fn rebuild(&self, choice: &[LineChoice], dev: &Device, again: bool) {
        let trace = dev.take_trace();
        if !again {
            dev.load_image(self.durable);
            self.apply(choice, dev);
            return;
        }
        let mut pages: Vec<u64> = trace
            .iter()
            .filter_map(|op| match op {
                TraceOp::Store { off, data } if !data.is_empty() => {
                    Some((off / 4096)..=((off + data.len() as u64 - 1) / 4096))
                }
                _ => None,
            })
            .flatten()
            .collect();
        pages.sort_unstable();
        pages.dedup();
        for p in pages {
            let at = (p * 4096) as usize;
            dev.write(at as u64, &self.durable[at..at + 4096]);
        }
        self.apply(choice, dev);
    }

    fn apply(&self, choice: &[LineChoice], dev: &Device) {
        for ((_, segs), c) in self.lines.iter().zip(choice) {
            for (i, s) in segs.iter().enumerate() {
                let data = self.seg_data(s);
                match c {
                    LineChoice::Prefix(n) => {
                        if i < *n {
                            dev.write(s.off, data);
                        }
                    }
                    LineChoice::Words(w) => {
                        // Byte by byte, each byte taking its word's prefix.
                        for (j, &b) in data.iter().enumerate() {
                            let word = ((s.off + j as u64) % LINE / 8) as usize;
                            if i < w[word] {
                                dev.write(s.off + j as u64, &[b]);
                            }
                        }
                    }
                }
            }
        }
    }

    /// A short description of a choice, for failure messages.
    pub fn describe(&self, choice: &[LineChoice]) -> String {
        let mut parts = Vec::new();
        for ((line, segs), c) in self.lines.iter().zip(choice) {
            let s = match c {
                LineChoice::Prefix(n) if *n == segs.len() => continue,
                LineChoice::Prefix(n) => format!("line {:#x}: {n}/{}", line * LINE, segs.len()),
                LineChoice::Words(w) => format!("line {:#x}: torn {w:?}", line * LINE),
            };
            parts.push(s);
        }
        if parts.is_empty() {
            "every in-flight store persisted".into()
        } else if parts.len() > 6 {
            format!(
                "{} of {} lines short, first: {}",
                parts.len(),
                self.lines.len(),
                parts[..3].join("; ")
            )
        } else {
            parts.join("; ")
        }
    }

    fn seg_data(&self, s: &Seg) -> &[u8] {
        match &self.trace[s.store] {
            TraceOp::Store { data, .. } => &data[s.at..s.at + s.len],
            _ => unreachable!("segments come from stores"),
        }
    }
}

/// Walk `trace` (recorded on a device whose contents were `base` when tracing began) and
/// call `f` at every crash point: before each fence at or after `from`, and at the end.
pub fn for_each_point(
    base: &[u8],
    trace: &[TraceOp],
    from: usize,
    f: &mut dyn FnMut(&CrashPoint<'_>),
) {
    let mut durable = base.to_vec();
    // Per line, its stores in flight, in order.
    let mut pending: BTreeMap<u64, Vec<Seg>> = BTreeMap::new();
    let point = |pos: usize,
                 durable: &[u8],
                 pending: &BTreeMap<u64, Vec<Seg>>,
                 f: &mut dyn FnMut(&CrashPoint<'_>)| {
        let cp = CrashPoint {
            pos,
            trace,
            durable,
            lines: pending.iter().map(|(l, s)| (*l, s.clone())).collect(),
        };
        f(&cp);
    };
    for (i, op) in trace.iter().enumerate() {
        match op {
            TraceOp::Store { off, data } => {
                let mut at = 0usize;
                while at < data.len() {
                    let off = off + at as u64;
                    let line = off / LINE;
                    let len = ((line + 1) * LINE - off).min((data.len() - at) as u64) as usize;
                    pending.entry(line).or_default().push(Seg {
                        store: i,
                        at,
                        off,
                        len,
                        flushed: false,
                    });
                    at += len;
                }
            }
            TraceOp::Flush { off, len } => {
                let (first, last) = (off / LINE, (off + len).div_ceil(LINE));
                for (_, segs) in pending.range_mut(first..last) {
                    for s in segs.iter_mut() {
                        s.flushed = true;
                    }
                }
            }
            TraceOp::Fence => {
                if i >= from {
                    point(i, &durable, &pending, f);
                }
                pending.retain(|_, segs| {
                    // Flushed stores are a prefix of each line's list (a flush marks all).
                    let n = segs.iter().take_while(|s| s.flushed).count();
                    for s in &segs[..n] {
                        let TraceOp::Store { data, .. } = &trace[s.store] else {
                            unreachable!()
                        };
                        durable[s.off as usize..s.off as usize + s.len]
                            .copy_from_slice(&data[s.at..s.at + s.len]);
                    }
                    segs.drain(..n);
                    !segs.is_empty()
                });
            }
        }
    }
    point(trace.len(), &durable, &pending, f);
}

/// Apply every store of `trace` to `img` (the image with nothing lost).
pub fn apply_all(img: &mut [u8], trace: &[TraceOp]) {
    for op in trace {
        if let TraceOp::Store { off, data } = op {
            img[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(off: u64, data: &[u8]) -> TraceOp {
        TraceOp::Store {
            off,
            data: data.to_vec(),
        }
    }

    fn images(base: &[u8], trace: &[TraceOp]) -> Vec<(usize, Vec<Vec<u8>>)> {
        let dev = Device::memfd(base.len() as u64).unwrap();
        let mut out = Vec::new();
        let mut rng = Rng::new(1);
        for_each_point(base, trace, 0, &mut |p| {
            let mut imgs = Vec::new();
            let limits = Limits {
                exhaustive: 64,
                samples: 8,
            };
            for c in p.choices(limits, &mut rng) {
                p.build(&c, &dev);
                let mut b = vec![0u8; base.len()];
                dev.read(0, &mut b);
                imgs.push(b);
            }
            out.push((p.pos, imgs));
        });
        out
    }

    #[test]
    fn flushed_and_fenced_is_durable_the_rest_may_be_lost() {
        let base = vec![0u8; 4096];
        let trace = vec![
            st(0, &[1; 8]),
            TraceOp::Flush { off: 0, len: 8 },
            st(128, &[2; 8]),
            TraceOp::Fence,
            st(0, &[3; 8]),
            TraceOp::Fence,
        ];
        let pts = images(&base, &trace);
        assert_eq!(pts.len(), 3);
        // Before the first fence: two lines in flight, four images.
        assert_eq!(pts[0].1.len(), 4);
        // Before the second: line 0 has its flushed 1s durable, 3s in flight; the 2s at
        // 128 were never flushed and may still be missing.
        for img in &pts[1].1 {
            assert!(img[0] == 1 || img[0] == 3);
            assert!(img[128] == 0 || img[128] == 2);
        }
        assert!(pts[1].1.iter().any(|i| i[0] == 1 && i[128] == 0));
        assert!(pts[1].1.iter().any(|i| i[0] == 3 && i[128] == 2));
        // A flush after the store is what makes it durable: the 3s never were flushed.
        assert!(pts[2].1.iter().any(|i| i[0] == 1));
    }

    #[test]
    fn a_store_after_the_flush_is_not_covered_by_it() {
        let base = vec![0u8; 4096];
        let trace = vec![
            st(0, &[1; 8]),
            TraceOp::Flush { off: 0, len: 64 },
            st(8, &[2; 8]),
            TraceOp::Fence,
            TraceOp::Fence,
        ];
        let pts = images(&base, &trace);
        // After the first fence the 1s are durable but the 2s (stored after the flush)
        // still only may be.
        let imgs = &pts[1].1;
        assert!(imgs.iter().all(|i| i[0] == 1));
        assert!(imgs.iter().any(|i| i[8] == 0) && imgs.iter().any(|i| i[8] == 2));
    }

    #[test]
    fn rebuild_restores_what_an_image_and_its_mount_wrote() {
        let base: Vec<u8> = (0..1 << 16).map(|i| (i % 251) as u8).collect();
        let trace = vec![
            st(100, &[1; 300]),
            TraceOp::Flush { off: 0, len: 200 },
            st(9000, &[2; 5000]),
            TraceOp::Fence,
            st(40000, &[3; 64]),
            TraceOp::Fence,
        ];
        let plain = Device::memfd(1 << 16).unwrap();
        let mut traced = Device::memfd(1 << 16).unwrap();
        traced.enable_trace();
        let mut rng = Rng::new(3);
        let limits = Limits {
            exhaustive: 4,
            samples: 6,
        };
        for_each_point(&base, &trace, 0, &mut |p| {
            for (i, c) in p.choices(limits, &mut rng).iter().enumerate() {
                p.build(c, &plain);
                p.rebuild(c, &traced, i > 0);
                let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
                plain.read(0, &mut a);
                traced.read(0, &mut b);
                assert!(a == b, "point {} image {i}", p.pos);
                // What a mount of the image would write, to be undone by the next rebuild.
                traced.write(20000 + i as u64 * 8, &[9; 4100]);
            }
        });
    }

    #[test]
    fn many_lines_are_sampled_with_torn_lines() {
        let base = vec![0u8; 1 << 16];
        let trace = vec![st(0, &[9u8; 1 << 15]), TraceOp::Fence];
        let dev = Device::memfd(1 << 16).unwrap();
        let mut rng = Rng::new(7);
        let mut seen_torn = false;
        for_each_point(&base, &trace, 0, &mut |p| {
            if p.pos != 1 {
                return;
            }
            assert_eq!(p.lines(), 512);
            let cs = p.choices(
                Limits {
                    exhaustive: 64,
                    samples: 20,
                },
                &mut rng,
            );
            assert_eq!(cs.len(), 20);
            for c in &cs {
                p.build(c, &dev);
                seen_torn |= c.iter().any(|l| matches!(l, LineChoice::Words(_)));
            }
        });
        assert!(seen_torn);
    }
}
