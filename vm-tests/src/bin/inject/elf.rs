//! Programs whose stack is executable, written for the runner (helpers, not techniques):
//! `mark-exec-stack`, a copy of a program whose `PT_GNU_STACK` asks for it, for
//! `stack-code`; `write-ia32-stack`, a 32-bit program with no `PT_GNU_STACK`, which the
//! kernel gives an executable stack by default; `write-exec-zero-fill`, a program whose
//! executable segment is longer in memory than in the file, so the kernel zero-fills the
//! rest as anonymous, writable and executable memory.

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

/// Where the zero-fill program is loaded: the classic x86_64 base.
const ZERO_FILL_BASE: u64 = 0x40_0000;
/// A page: the file part of the segment, and the alignment of everything.
const PAGE: u64 = 0x1000;
/// ELF64 header and two program headers.
const ZERO_FILL_HEADERS: u64 = 64 + 2 * 56;

/// x86_64 code that writes [`technique::CODE`] to the zero-filled page after its own
/// and calls it, then exits with what it returned: `mov edi, BASE + PAGE; movabs rax,
/// CODE; mov [rdi], rax; call rdi; mov edi, eax; mov eax, 60; syscall`.
fn zero_fill_code() -> Vec<u8> {
    let target = u32::try_from(ZERO_FILL_BASE + PAGE).unwrap_or(u32::MAX);
    let mut payload = [0x90u8; 8]; // nop padding after CODE's ret
    payload[..technique::CODE.len()].copy_from_slice(&technique::CODE);
    let mut code = vec![0xbf]; // mov edi, imm32
    code.extend_from_slice(&target.to_le_bytes());
    code.extend_from_slice(&[0x48, 0xb8]); // movabs rax, imm64
    code.extend_from_slice(&payload);
    code.extend_from_slice(&[0x48, 0x89, 0x07]); // mov [rdi], rax
    code.extend_from_slice(&[0xff, 0xd7]); // call rdi
    code.extend_from_slice(&[0x89, 0xc7]); // mov edi, eax
    code.extend_from_slice(&[0xb8, 60, 0, 0, 0]); // mov eax, SYS_exit
    code.extend_from_slice(&[0x0f, 0x05]); // syscall
    code
}

/// A static ELF64 x86_64 executable of one `PT_LOAD` (R+X) whose memory size is three
/// pages and whose file size is one: `elf_load` (`set_brk` on 6.1) maps the other two with
/// `vm_brk_flags(VM_EXEC)`, anonymous and writable. Its `PT_GNU_STACK` keeps the stack
/// non-executable, so only the zero-fill is in question. The file part ends on a page
/// boundary: the kernel then has no partial page to clear, which it could not in a
/// read-only segment on 6.1.
fn zero_fill_program() -> Vec<u8> {
    let mut elf = Vec::new();
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V ABI, padding.
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    let half = |elf: &mut Vec<u8>, v: u16| elf.extend_from_slice(&v.to_le_bytes());
    let word = |elf: &mut Vec<u8>, v: u32| elf.extend_from_slice(&v.to_le_bytes());
    let xword = |elf: &mut Vec<u8>, v: u64| elf.extend_from_slice(&v.to_le_bytes());
    half(&mut elf, 2); // e_type: ET_EXEC
    half(&mut elf, 62); // e_machine: EM_X86_64
    word(&mut elf, 1); // e_version
    xword(&mut elf, ZERO_FILL_BASE + ZERO_FILL_HEADERS); // e_entry: the code after the headers
    xword(&mut elf, 64); // e_phoff
    xword(&mut elf, 0); // e_shoff
    word(&mut elf, 0); // e_flags
    half(&mut elf, 64); // e_ehsize
    half(&mut elf, 56); // e_phentsize
    half(&mut elf, 2); // e_phnum
    half(&mut elf, 0); // e_shentsize
    half(&mut elf, 0); // e_shnum
    half(&mut elf, 0); // e_shstrndx
    word(&mut elf, 1); // p_type: PT_LOAD
    word(&mut elf, 0x4 | 0x1); // p_flags: PF_R | PF_X
    xword(&mut elf, 0); // p_offset
    xword(&mut elf, ZERO_FILL_BASE); // p_vaddr
    xword(&mut elf, ZERO_FILL_BASE); // p_paddr
    xword(&mut elf, PAGE); // p_filesz
    xword(&mut elf, 3 * PAGE); // p_memsz: two pages of zero-fill
    xword(&mut elf, PAGE); // p_align
    word(&mut elf, PT_GNU_STACK); // p_type
    word(&mut elf, 0x4 | 0x2); // p_flags: PF_R | PF_W
    for _ in 0..5 {
        xword(&mut elf, 0); // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz
    }
    xword(&mut elf, 16); // p_align
    elf.extend_from_slice(&zero_fill_code());
    elf.resize(usize::try_from(PAGE).unwrap_or(usize::MAX), 0);
    elf
}

/// Writes [`zero_fill_program`] to `dst`, mode 0755.
pub(crate) fn write_exec_zero_fill(dst: &str) {
    std::fs::write(dst, zero_fill_program())
        .and_then(|()| std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)))
        .unwrap_or_else(|err| technique::broken(&format!("write {dst}: {err}")));
    println!("wrote {dst}: a program that runs code from its executable zero-filled memory");
}
