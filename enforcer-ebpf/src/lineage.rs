//! Lineage: which recorded exec started the current one, and per-boot exec ids.

use core::intrinsics::{AtomicOrdering, atomic_xadd};
use core::ptr;

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_task};

use crate::kmem::{
    TASK_GROUP_LEADER_OFFSET, TASK_REAL_PARENT_OFFSET, TASK_START_TIME_OFFSET, TASK_TGID_OFFSET,
    config, read_at, read_via,
};
use crate::maps::{EXEC_SEQ, IMAGES};

/// Where an operation comes from.
pub(crate) struct Lineage {
    pub(crate) tgid: u32,
    pub(crate) ppid: u32,
    pub(crate) leader_start_ns: u64,
    pub(crate) parent_exec_id: u64,
}

/// The current process, its parent, and which recorded image started this exec: the
/// image this process ran before (an exec chain), else its parent's current image. The
/// leader's start time guards against pid reuse.
#[inline(always)]
pub(crate) unsafe fn lineage() -> Lineage {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: every read goes through bpf_probe_read_kernel, which tolerates bad pointers.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let start_of = |t: *const u8| -> u64 {
            read_via(t, &TASK_GROUP_LEADER_OFFSET, &TASK_START_TIME_OFFSET).unwrap_or(0)
        };
        let leader_start_ns = start_of(task);
        let parent: *const u8 =
            read_at(task, config(&TASK_REAL_PARENT_OFFSET)).unwrap_or(ptr::null());
        let ppid: u32 = read_at(parent, config(&TASK_TGID_OFFSET)).unwrap_or(0);
        let recorded = |key: u32, start: u64| -> Option<u64> {
            let image = IMAGES.get(&key)?;
            (start != 0 && image.leader_start_ns == start).then_some(image.exec_id)
        };
        let parent_exec_id = recorded(tgid, leader_start_ns)
            .or_else(|| recorded(ppid, start_of(parent)))
            .unwrap_or(0);
        Lineage {
            tgid,
            ppid,
            leader_start_ns,
            parent_exec_id,
        }
    }
}

/// The next per-boot exec id (1, 2, ...); 0 only if the counter map is unreadable.
#[inline(always)]
pub(crate) fn next_exec_id() -> u64 {
    match EXEC_SEQ.get_ptr_mut(0) {
        // SAFETY: the array slot lives as long as the map; the atomic add makes concurrent
        // execs on other CPUs get distinct ids. SeqCst, not Relaxed: LLVM lowers a relaxed
        // add to BPF's legacy XADD, which returns nothing, and then uses the addend as the
        // "old value" (every id came out as 2); SeqCst gives the fetching instruction.
        Some(slot) => (unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(slot, 1) }) + 1,
        None => 0,
    }
}
