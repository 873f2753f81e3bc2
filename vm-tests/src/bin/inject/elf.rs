//! Programs whose stack is executable, written for the runner (helpers, not techniques):
//! `mark-exec-stack`, a copy of a program whose `PT_GNU_STACK` asks for it, for
//! `stack-code`; `write-ia32-stack`, a 32-bit program with no `PT_GNU_STACK`, which the
//! kernel gives an executable stack by default.

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

/// Where the 32-bit program is loaded: the classic i386 base.
const IA32_BASE: u32 = 0x0804_8000;
/// ELF32 header and one program header.
const IA32_HEADERS: u32 = 52 + 32;

/// i386 code that writes code to its stack and jumps there: `push 0x9080cd2a;
/// push 0xb340c031; jmp esp`. On the stack: `xor eax, eax; inc eax; mov bl, 42;
/// int 0x80`, which is exit(42) ([`technique::INJECTED`]; the kernel starts an i386
/// process with its registers cleared).
const IA32_STACK_CODE: [u8; 12] = [
    0x68, 0x2a, 0xcd, 0x80, 0x90, // push 0x9080cd2a
    0x68, 0x31, 0xc0, 0x40, 0xb3, // push 0xb340c031
    0xff, 0xe4, // jmp esp
];

/// A static ELF32 i386 executable of one `PT_LOAD` (R+X) and no `PT_GNU_STACK`: for a
/// 32-bit program without that header, `elf_read_implies_exec` is true, so
/// `setup_arg_pages` makes its stack executable (and its personality READ_IMPLIES_EXEC).
fn ia32_stack_program() -> Vec<u8> {
    let code = IA32_STACK_CODE;
    let size = IA32_HEADERS + u32::try_from(code.len()).unwrap_or(u32::MAX);
    let mut elf = Vec::new();
    // e_ident: magic, ELFCLASS32, ELFDATA2LSB, EV_CURRENT, System V ABI, padding.
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[1, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    let half = |elf: &mut Vec<u8>, v: u16| elf.extend_from_slice(&v.to_le_bytes());
    let word = |elf: &mut Vec<u8>, v: u32| elf.extend_from_slice(&v.to_le_bytes());
    half(&mut elf, 2); // e_type: ET_EXEC
    half(&mut elf, 3); // e_machine: EM_386
    word(&mut elf, 1); // e_version
    word(&mut elf, IA32_BASE + IA32_HEADERS); // e_entry: the code after the headers
    word(&mut elf, 52); // e_phoff
    word(&mut elf, 0); // e_shoff
    word(&mut elf, 0); // e_flags
    half(&mut elf, 52); // e_ehsize
    half(&mut elf, 32); // e_phentsize
    half(&mut elf, 1); // e_phnum
    half(&mut elf, 0); // e_shentsize
    half(&mut elf, 0); // e_shnum
    half(&mut elf, 0); // e_shstrndx
    word(&mut elf, 1); // p_type: PT_LOAD
    word(&mut elf, 0); // p_offset
    word(&mut elf, IA32_BASE); // p_vaddr
    word(&mut elf, IA32_BASE); // p_paddr
    word(&mut elf, size); // p_filesz
    word(&mut elf, size); // p_memsz
    word(&mut elf, 0x4 | 0x1); // p_flags: PF_R | PF_X
    word(&mut elf, 0x1000); // p_align
    elf.extend_from_slice(&code);
    elf
}

/// Writes [`ia32_stack_program`] to `dst`, mode 0755.
pub(crate) fn write_ia32_stack(dst: &str) {
    std::fs::write(dst, ia32_stack_program())
        .and_then(|()| std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)))
        .unwrap_or_else(|err| technique::broken(&format!("write {dst}: {err}")));
    println!("wrote {dst}: an i386 program without PT_GNU_STACK that runs code on its stack");
}
