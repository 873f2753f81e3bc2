//! `mark-exec-stack`: a copy of a program whose `PT_GNU_STACK` asks for an executable
//! stack, for `stack-code`. A helper of the runner, not a technique.

use std::os::unix::fs::PermissionsExt as _;

use vm_tests::technique;

/// `PT_GNU_STACK` from include/uapi/linux/elf.h.
const PT_GNU_STACK: u32 = 0x6474_e551;
/// `PF_R | PF_W | PF_X`.
const PF_RWX: u32 = 0x4 | 0x2 | 0x1;

/// Reads `N` bytes at `at`, or says what is missing.
fn bytes<const N: usize>(elf: &[u8], at: usize, what: &str) -> Result<[u8; N], String> {
    at.checked_add(N)
        .and_then(|end| elf.get(at..end))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "{what} at {at:#x} lies beyond the end ({} bytes)",
                elf.len()
            )
        })
}

fn u16_at(elf: &[u8], at: usize, what: &str) -> Result<usize, String> {
    bytes(elf, at, what).map(|b| usize::from(u16::from_le_bytes(b)))
}

/// Sets the flags of `elf`'s `PT_GNU_STACK` to RWX; only little-endian ELF64 is taken.
fn mark(elf: &mut [u8]) -> Result<(), String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".into());
    }
    // e_ident[EI_CLASS] = ELFCLASS64, e_ident[EI_DATA] = ELFDATA2LSB.
    if elf.get(4..6) != Some([2u8, 1].as_slice()) {
        return Err("not a little-endian ELF64 file".into());
    }
    let phoff = u64::from_le_bytes(bytes(elf, 0x20, "e_phoff")?);
    let phoff = usize::try_from(phoff).map_err(|_| format!("e_phoff {phoff:#x}"))?;
    let phentsize = u16_at(elf, 0x36, "e_phentsize")?;
    let phnum = u16_at(elf, 0x38, "e_phnum")?;
    if phentsize < 8 {
        return Err(format!("e_phentsize {phentsize} is too small"));
    }
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| format!("program header {i} lies beyond any address"))?;
        if u32::from_le_bytes(bytes(elf, at, "p_type")?) == PT_GNU_STACK {
            bytes::<4>(elf, at + 4, "p_flags")?;
            elf[at + 4..at + 8].copy_from_slice(&PF_RWX.to_le_bytes());
            return Ok(());
        }
    }
    Err(format!("no PT_GNU_STACK among its {phnum} program headers"))
}

/// Copies the ELF program `src` to `dst` (mode 0755) with the flags of its `PT_GNU_STACK`
/// program header set to `PF_R | PF_W | PF_X`, so the kernel gives it an executable
/// stack. Anything that is not a little-endian ELF64 with that header is refused.
pub(crate) fn mark_exec_stack(src: &str, dst: &str) {
    let mut elf =
        std::fs::read(src).unwrap_or_else(|err| technique::broken(&format!("read {src}: {err}")));
    if let Err(why) = mark(&mut elf) {
        technique::broken(&format!("{src}: {why}"));
    }
    std::fs::write(dst, &elf)
        .and_then(|()| std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)))
        .unwrap_or_else(|err| technique::broken(&format!("write {dst}: {err}")));
    println!("wrote {dst}: {src} with PT_GNU_STACK set to RWX");
}
