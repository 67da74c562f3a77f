//! Whole pages worked on by every core, as the PSP's SHA and AES engines work beside its
//! core: each page is independent, so a range is cut into one share per core.

use std::sync::OnceLock;

const PAGE: usize = 4096;
/// The fewest pages a share is worth a thread for (64 KiB: some 150 µs of SHA-384 and XTS,
/// against some 20 µs to start a thread).
const MIN_SHARE: usize = 16;

/// Why [`per_page`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stopped<E> {
    /// The lowest page that failed; every page below it was done.
    pub page: usize,
    /// Its error, or `None` if the thread working on it panicked.
    pub error: Option<E>,
}

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8)
    })
}

/// Runs `work(i, page, item)` for each whole page of `pages` with `items[i]`, in order within
/// a share, the shares on threads of their own. A share stops at its first failure; pages
/// after the lowest failure in other shares may have been worked on, and are the caller's to
/// ignore.
pub(crate) fn per_page<T: Send, E: Send>(
    pages: &mut [u8],
    items: &mut [T],
    work: impl Fn(usize, &mut [u8], &mut T) -> Result<(), E> + Sync,
) -> Result<(), Stopped<E>> {
    let n = items.len().min(pages.len() / PAGE);
    let share = n.div_ceil(cores()).max(MIN_SHARE);
    let run = |first: usize, pages: &mut [u8], items: &mut [T]| {
        for (j, (page, item)) in pages.chunks_exact_mut(PAGE).zip(items).enumerate() {
            work(first + j, page, item).map_err(|e| Stopped {
                page: first + j,
                error: Some(e),
            })?;
        }
        Ok(())
    };
    if n <= share {
        return run(0, &mut pages[..n * PAGE], &mut items[..n]);
    }
    let run = &run;
    let stops = std::thread::scope(|s| {
        let mut inline = vec![];
        let mut jobs = vec![];
        for (k, (p, it)) in pages[..n * PAGE]
            .chunks_mut(share * PAGE)
            .zip(items[..n].chunks_mut(share))
            .enumerate()
        {
            let first = k * share;
            // A thread the system will not give is a share done here instead.
            let spawned = std::thread::Builder::new().spawn_scoped(s, move || run(first, p, it));
            match spawned {
                Ok(job) => jobs.push((first, job)),
                Err(_) => inline.push(first),
            }
        }
        let mut stops: Vec<Stopped<E>> = vec![];
        for (first, job) in jobs {
            match job.join() {
                Ok(r) => stops.extend(r.err()),
                Err(_) => stops.push(Stopped {
                    page: first,
                    error: None,
                }),
            }
        }
        (stops, inline)
    });
    let (mut stops, inline) = stops;
    for first in inline {
        let end = (first + share).min(n);
        stops.extend(
            run(
                first,
                &mut pages[first * PAGE..end * PAGE],
                &mut items[first..end],
            )
            .err(),
        );
    }
    stops.into_iter().min_by_key(|s| s.page).map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_once_with_its_item_and_the_lowest_failure_wins() {
        let n = 1000;
        let mut pages = vec![0u8; n * PAGE];
        let mut items: Vec<usize> = vec![0; n];
        per_page(&mut pages, &mut items, |i, page, item| {
            page[0] = page[0].wrapping_add(1);
            *item = i;
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(pages.chunks(PAGE).all(|p| p[0] == 1));
        assert!(items.iter().enumerate().all(|(i, v)| *v == i));
        // Failures in two shares: the lower one is reported, everything below it done.
        let mut items = vec![false; n];
        let r = per_page(&mut pages, &mut items, |i, _, done| {
            if i == 700 || i == 300 {
                return Err(i);
            }
            *done = true;
            Ok(())
        });
        assert_eq!(
            r,
            Err(Stopped {
                page: 300,
                error: Some(300)
            })
        );
        assert!(items[..300].iter().all(|d| *d));
        // A short range stays on the caller's thread, in order.
        let mut order = vec![0usize; 3];
        let me = std::thread::current().id();
        per_page(&mut pages[..3 * PAGE], &mut order, |i, _, o| {
            assert_eq!(std::thread::current().id(), me);
            *o = i;
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(order, [0, 1, 2]);
    }
}
