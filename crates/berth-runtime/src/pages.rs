//! Giving back the file pages a long-lived shim touched while starting up.
//!
//! The shim is the whole `berth` binary re-executed. Starting a container touches code all
//! over it (and the kernel maps pages around each fault), so a shim idling in its wait loop
//! would keep several MB of the binary's pages mapped that it never uses again. They are
//! page cache shared with every other shim, but they count in each shim's RSS. Dropping the
//! mappings of read-only, never-written file pages is safe — a later access faults the same
//! bytes back in from the file — and leaves the RSS at what the wait loop really uses.

use std::fs;

/// Unmaps (`MADV_DONTNEED`) the resident pages of this process's non-writable file
/// mappings that hold no private copies. Best effort: failures leave the pages as they are.
pub fn release_startup_pages() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in droppable(&smaps) {
        drop_range(start, end);
    }
}

/// The `[start, end)` ranges of mappings that are file-backed, not writable, and have no
/// anonymous (privately modified) pages — e.g. code and read-only data, but not relocated
/// RELRO data, whose pages differ from the file.
fn droppable(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            current = None;
            let perms = fields.next().unwrap_or_default();
            let inode = fields.nth(2).unwrap_or("0");
            let path = fields.next().unwrap_or_default();
            let file_backed = inode != "0" && path.starts_with('/');
            if file_backed && !perms.contains('w') && perms.ends_with('p') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    current = Some((a, b));
                }
            }
        } else if first == "Anonymous:" {
            let anon: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(1);
            if let Some(range) = current.take() {
                if anon == 0 {
                    out.push(range);
                }
            }
        }
    }
    out
}

#[allow(unsafe_code)]
fn drop_range(start: usize, end: usize) {
    // SAFETY: the range is a whole, read-only, private file mapping of this process with no
    // privately modified pages (checked from smaps); MADV_DONTNEED only removes its pages
    // from the page tables, and the next access reads the identical bytes from the file.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let smaps = "\
55d000000000-55d000100000 r--p 00000000 fd:01 1234 /usr/bin/berth
Rss:                 400 kB
Anonymous:             0 kB
55d000100000-55d000200000 r-xp 00100000 fd:01 1234 /usr/bin/berth
Anonymous:             0 kB
55d000200000-55d000300000 r--p 00200000 fd:01 1234 /usr/bin/berth
Anonymous:           716 kB
55d000300000-55d000310000 rw-p 00300000 fd:01 1234 /usr/bin/berth
Anonymous:             8 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
Anonymous:          1024 kB
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            droppable(smaps),
            vec![
                (0x55d0_0000_0000, 0x55d0_0010_0000),
                (0x55d0_0010_0000, 0x55d0_0020_0000)
            ]
        );
    }
}
