//! The few bpf(2) commands aya 0.14 does not offer: batch lookups, updates and deletes (a
//! 100k-grant switch in one call per direction instead of 100k calls), and map creation,
//! so tests and the host benchmark can drive the agent's map code on maps made on the
//! spot.
//!
//! Attribute layouts are those of `union bpf_attr` in include/uapi/linux/bpf.h. The size
//! passed to the kernel is that of our struct: the kernel zero-fills the fields it knows
//! beyond it.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_BATCH: u32 = 24;
const BPF_MAP_UPDATE_BATCH: u32 = 26;
const BPF_MAP_DELETE_BATCH: u32 = 27;

pub(super) const BPF_F_NO_PREALLOC: u32 = 1;

/// The kernel's internal ENOTSUPP, which leaks to userspace when a map type has no batch
/// operations.
const ENOTSUPP: i32 = 524;

/// `attr.batch`: the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: how many entries; out: how many were processed.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The first fields of `BPF_MAP_CREATE`'s attributes, up to the map's name.
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is the attribute struct for `cmd`, valid and writable for the call;
    // any pointers in it point at live buffers of the sizes the map expects.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A batch command that stopped part-way.
#[derive(Debug)]
pub(super) struct BatchError {
    /// Entries processed before the failing one.
    pub done: usize,
    pub source: io::Error,
}

impl BatchError {
    /// The kernel has no batch operation for this map (or no batch commands at all): the
    /// caller should go element by element. Only an error before any entry counts.
    pub(super) fn unsupported(&self) -> bool {
        self.done == 0
            && matches!(
                self.source.raw_os_error(),
                Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
            )
    }

    /// The entry at `done` was not in the map (a delete).
    pub(super) fn not_found(&self) -> bool {
        self.source.raw_os_error() == Some(libc::ENOENT)
    }
}

fn batch(
    cmd: u32,
    map: BorrowedFd<'_>,
    keys: u64,
    values: u64,
    count: usize,
) -> Result<(), BatchError> {
    let too_many = || BatchError {
        done: 0,
        source: io::Error::from_raw_os_error(libc::E2BIG),
    };
    let mut attr = BatchAttr {
        keys,
        values,
        count: u32::try_from(count).map_err(|_| too_many())?,
        map_fd: u32::try_from(map.as_raw_fd()).map_err(|_| too_many())?,
        ..BatchAttr::default()
    };
    match bpf(cmd, &mut attr) {
        Ok(_) => Ok(()),
        Err(source) => Err(BatchError {
            done: attr.count as usize,
            source,
        }),
    }
}

/// `BPF_MAP_UPDATE_BATCH`: writes `keys[i] -> values[i]` (any existing value replaced).
/// `K` and `V` must be the map's key and value types, without padding holes.
pub(super) fn update_batch<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), BatchError> {
    let count = keys.len().min(values.len());
    batch(
        BPF_MAP_UPDATE_BATCH,
        map,
        keys.as_ptr() as u64,
        values.as_ptr() as u64,
        count,
    )
}

/// `BPF_MAP_DELETE_BATCH`: deletes `keys` in order, stopping at the first missing one.
pub(super) fn delete_batch<K: aya::Pod>(map: BorrowedFd<'_>, keys: &[K]) -> Result<(), BatchError> {
    batch(
        BPF_MAP_DELETE_BATCH,
        map,
        keys.as_ptr() as u64,
        0,
        keys.len(),
    )
}

/// `BPF_MAP_LOOKUP_BATCH` over a whole hash map: every entry, read bucket by bucket.
///
/// Unlike walking keys with `BPF_MAP_GET_NEXT_KEY`, which starts over from the first key
/// when the current one was deleted meanwhile (an LRU map under exec churn deletes all
/// the time), the batch walk moves on by bucket and always ends. `K` and `V` must be the
/// map's key and value types, and the map a hash map (its batch token is a bucket index).
pub(super) fn lookup_all<K: aya::Pod + Default, V: aya::Pod + Default>(
    map: BorrowedFd<'_>,
) -> Result<Vec<(K, V)>, BatchError> {
    let mut chunk = 4096usize;
    let mut entries = Vec::new();
    // Where the next batch starts; `None` for the first.
    let mut from: Option<u32> = None;
    loop {
        let mut keys = vec![K::default(); chunk];
        let mut values = vec![V::default(); chunk];
        let mut next = 0u32;
        let too_many = || BatchError {
            done: entries.len(),
            source: io::Error::from_raw_os_error(libc::E2BIG),
        };
        let mut attr = BatchAttr {
            in_batch: from.as_ref().map_or(0, |f| std::ptr::from_ref(f) as u64),
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).map_err(|_| too_many())?,
            map_fd: u32::try_from(map.as_raw_fd()).map_err(|_| too_many())?,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = (attr.count as usize).min(chunk);
        match result {
            Ok(_) => {}
            // The last batch: what it returned is valid.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                entries.extend(keys.into_iter().zip(values).take(got));
                return Ok(entries);
            }
            // One bucket holds more entries than fit: retry it with more room.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 && chunk < 1 << 20 => {
                chunk *= 4;
                continue;
            }
            Err(source) => {
                return Err(BatchError {
                    done: entries.len(),
                    source,
                });
            }
        }
        entries.extend(keys.into_iter().zip(values).take(got));
        from = Some(next);
    }
}

/// `BPF_MAP_CREATE` of an unpinned map, owned by the returned descriptor.
pub(super) fn create_map(
    name: &str,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = CreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        ..CreateAttr::default()
    };
    // The kernel keeps 15 bytes and wants only [A-Za-z0-9_.]: our names qualify.
    let n = name.len().min(attr.map_name.len() - 1);
    attr.map_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf returned an impossible fd"))?;
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
