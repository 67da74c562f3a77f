//! Which pages of this process's memory were ever touched, from /proc/self/pagemap
//! (Documentation/admin-guide/mm/pagemap.rst): a page is touched once it is present or
//! swapped out. Anyone may read their own flags; only the frame numbers need privilege.

use std::os::unix::fs::FileExt;

const PAGE: usize = 4096;
/// Bit 63: the page is present in RAM.
const PRESENT: u64 = 1 << 63;
/// Bit 62: the page is swapped out.
const SWAPPED: u64 = 1 << 62;
/// Entries read at a time (512 KiB of pagemap covers 256 MiB of memory).
const BATCH: usize = 64 * 1024;

/// The runs of touched pages in `len` bytes at `addr` (page-aligned), as (offset, bytes).
pub fn touched(addr: usize, len: usize) -> std::io::Result<Vec<(usize, usize)>> {
    let file = std::fs::File::open("/proc/self/pagemap")?;
    let pages = len / PAGE;
    let first = addr / PAGE;
    let mut runs: Vec<(usize, usize)> = vec![];
    let mut buf = vec![0u8; BATCH * 8];
    let mut page = 0;
    while page < pages {
        let n = (pages - page).min(BATCH);
        let bytes = &mut buf[..n * 8];
        file.read_exact_at(bytes, ((first + page) * 8) as u64)?;
        for (i, e) in bytes.chunks_exact(8).enumerate() {
            let entry = u64::from_ne_bytes(e.try_into().unwrap_or_default());
            if entry & (PRESENT | SWAPPED) == 0 {
                continue;
            }
            let off = (page + i) * PAGE;
            match runs.last_mut() {
                Some((at, len)) if *at + *len == off => *len += PAGE,
                _ => runs.push((off, PAGE)),
            }
        }
        page += n;
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_written_pages_count() {
        let mut map = memmap2::MmapOptions::new()
            .len(64 * PAGE)
            .no_reserve_swap()
            .map_anon()
            .unwrap();
        assert_eq!(touched(map.as_ptr() as usize, map.len()).unwrap(), []);
        map[3 * PAGE] = 1;
        map[4 * PAGE + 17] = 1;
        map[10 * PAGE] = 1;
        assert_eq!(
            touched(map.as_ptr() as usize, map.len()).unwrap(),
            [(3 * PAGE, 2 * PAGE), (10 * PAGE, PAGE)]
        );
    }
}
