//! Dirty-page logging kept by the backend itself, for hypervisors without a dirty log
//! (Hypervisor.framework): a per-region bitmap of pages, in the layout `take` returns (bit
//! `n % 64` of word `n / 64` for page `n`), filled from write faults on write-protected pages.

use accel_api::error::{AccelError, Result};

/// The dirty pages of one memory region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyBitmap {
    base: u64,
    size: u64,
    page_size: u64,
    words: Vec<u64>,
}

impl DirtyBitmap {
    /// An empty bitmap for the region at guest physical `base` of `size` bytes, with pages of
    /// `page_size` bytes (a power of two that divides both).
    pub fn new(base: u64, size: u64, page_size: u64) -> Result<Self> {
        if !page_size.is_power_of_two() || base % page_size != 0 || size % page_size != 0 {
            return Err(AccelError::invalid(format!(
                "a region at {base:#x} of {size:#x} bytes is not made of {page_size}-byte pages"
            )));
        }
        let pages = size / page_size;
        let words = usize::try_from(pages.div_ceil(64))
            .map_err(|_| AccelError::invalid(format!("a region of {size:#x} bytes is too large to log")))?;
        Ok(Self { base, size, page_size, words: vec![0; words] })
    }

    /// The page holding guest physical `ipa`, as (its index in the region, its first address),
    /// or `None` outside the region.
    pub fn page_of(&self, ipa: u64) -> Option<(u64, u64)> {
        let offset = ipa.checked_sub(self.base).filter(|o| *o < self.size)?;
        let index = offset / self.page_size;
        Some((index, self.base + index * self.page_size))
    }

    /// Marks the page holding `ipa` dirty; returns its first address, or `None` outside the
    /// region.
    pub fn mark(&mut self, ipa: u64) -> Option<u64> {
        let (index, start) = self.page_of(ipa)?;
        let word = self.words.get_mut((index / 64) as usize)?;
        *word |= 1 << (index % 64);
        Some(start)
    }

    /// Whether page `index` is dirty.
    pub fn is_dirty(&self, index: u64) -> bool {
        self.words.get((index / 64) as usize).is_some_and(|w| w >> (index % 64) & 1 == 1)
    }

    /// The bitmap, and a clean one in its place.
    pub fn take(&mut self) -> Vec<u64> {
        let empty = vec![0; self.words.len()];
        std::mem::replace(&mut self.words, empty)
    }

    /// The first addresses of the dirty pages, in order.
    pub fn dirty_pages(&self) -> impl Iterator<Item = u64> + '_ {
        let pages = self.size / self.page_size;
        (0..pages).filter(|i| self.is_dirty(*i)).map(|i| self.base + i * self.page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 16 * 1024;

    #[test]
    fn writes_mark_their_16k_page() {
        let mut log = DirtyBitmap::new(0x4000_0000, 130 * PAGE, PAGE).unwrap();
        assert_eq!(log.mark(0x4000_0000 + 3 * PAGE + 17), Some(0x4000_0000 + 3 * PAGE));
        assert_eq!(log.mark(0x4000_0000 + 64 * PAGE), Some(0x4000_0000 + 64 * PAGE));
        assert_eq!(log.mark(0x4000_0000 + 129 * PAGE + PAGE - 1), Some(0x4000_0000 + 129 * PAGE));
        assert_eq!(log.mark(0x4000_0000 + 130 * PAGE), None, "past the end");
        assert_eq!(log.mark(0x3fff_ffff), None, "before the start");
        assert_eq!(log.dirty_pages().count(), 3);
        let words = log.take();
        assert_eq!(words, vec![1 << 3, 1, 1 << 1]);
        assert_eq!(log.take(), vec![0, 0, 0], "taking clears");
    }

    #[test]
    fn regions_must_be_whole_pages() {
        assert!(DirtyBitmap::new(0x4000_0000, PAGE + 4096, PAGE).is_err());
        assert!(DirtyBitmap::new(0x4000_1000, PAGE, PAGE).is_err());
        assert!(DirtyBitmap::new(0, PAGE, 3).is_err());
        assert_eq!(DirtyBitmap::new(0, 64 * PAGE, PAGE).map(|mut b| b.take().len()), Ok(1));
    }
}
