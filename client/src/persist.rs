//! Persistence primitives for stores into a DAX (MAP_SYNC / device-DAX) mapping: write the
//! cache lines back (clwb where the CPU has it, else clflushopt, else clflush), then sfence.
//! The CPU features are read once with cpuid.

use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flush {
    Clwb,
    Clflushopt,
    Clflush,
}

#[cfg(target_arch = "x86_64")]
fn flush_kind() -> Flush {
    static K: OnceLock<Flush> = OnceLock::new();
    *K.get_or_init(|| {
        // Leaf 0 reports the highest leaf; 7 holds the cache-flush feature bits.
        let max = core::arch::x86_64::__cpuid(0).eax;
        if max < 7 {
            return Flush::Clflush;
        }
        let b = core::arch::x86_64::__cpuid_count(7, 0).ebx;
        if b & (1 << 24) != 0 {
            Flush::Clwb
        } else if b & (1 << 23) != 0 {
            Flush::Clflushopt
        } else {
            Flush::Clflush
        }
    })
}

/// Write back the cache lines of [p, p+len) and fence.
pub fn flush_fence(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let k = flush_kind();
        let mut a = (p as usize) & !63;
        let end = p as usize + len;
        while a < end {
            // SAFETY: the caller's range is mapped (a pinned mapping); these instructions
            // only write back the cache line holding `a`.
            unsafe {
                match k {
                    Flush::Clwb => {
                        core::arch::asm!("clwb [{0}]", in(reg) a, options(nostack, preserves_flags))
                    }
                    Flush::Clflushopt => {
                        core::arch::asm!("clflushopt [{0}]", in(reg) a, options(nostack, preserves_flags))
                    }
                    Flush::Clflush => core::arch::x86_64::_mm_clflush(a as *const u8),
                }
            }
            a += 64;
        }
        // SAFETY: sfence has no preconditions.
        unsafe { core::arch::x86_64::_mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, len);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn flush_fence_on_ordinary_memory() {
        let v = vec![7u8; 4096];
        super::flush_fence(v.as_ptr().wrapping_add(3), 4000);
        assert_eq!(v[100], 7);
    }
}
