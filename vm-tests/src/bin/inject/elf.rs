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
const IA32_BASE: u64 = 0x0804_8000;
/// i386 code that writes code to its stack and jumps there: `push 0x9080cd2a;
/// push 0xb340c031; jmp esp`. On the stack: `xor eax, eax; inc eax; mov bl, 42;
/// int 0x80`, which is exit(42) ([`technique::INJECTED`]; the kernel starts an i386
/// process with its registers cleared).
const IA32_STACK_CODE: [u8; 12] = [
    0x68, 0x2a, 0xcd, 0x80, 0x90, // push 0x9080cd2a
    0x68, 0x31, 0xc0, 0x40, 0xb3, // push 0xb340c031
    0xff, 0xe4, // jmp esp
];

/// `PT_LOAD`.
const PT_LOAD: u32 = 1;
/// `PF_R | PF_X`.
const PF_RX: u32 = 0x4 | 0x1;
/// `PF_R | PF_W`.
const PF_RW: u32 = 0x4 | 0x2;

/// A program header, the same fields in both classes (their order differs).
struct Segment {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// A little-endian static executable (`ET_EXEC`) under construction: the ELF header of
/// its class, its program headers right after it, then the code at the entry point.
struct Executable {
    bytes: Vec<u8>,
    class64: bool,
}

impl Executable {
    /// Size of the ELF header and of a program header, in this class.
    const fn sizes(class64: bool) -> (u16, u16) {
        if class64 { (64, 56) } else { (52, 32) }
    }

    /// Where the code starts in the file (and past `base`, in memory).
    const fn code_offset(class64: bool, segments: u16) -> u64 {
        let (header, program_header) = Self::sizes(class64);
        header as u64 + segments as u64 * program_header as u64
    }

    /// The headers of a program of `segments`, loaded at `base` for `machine`, entered at
    /// the code after the headers.
    fn new(class64: bool, machine: u16, base: u64, segments: &[Segment]) -> Self {
        let (header, program_header) = Self::sizes(class64);
        let count = u16::try_from(segments.len()).unwrap_or(u16::MAX);
        let mut elf = Self {
            bytes: Vec::new(),
            class64,
        };
        // e_ident: magic, class, ELFDATA2LSB, EV_CURRENT, System V ABI, padding.
        elf.bytes.extend_from_slice(b"\x7fELF");
        elf.bytes
            .extend_from_slice(&[if class64 { 2 } else { 1 }, 1, 1, 0]);
        elf.bytes.extend_from_slice(&[0; 8]);
        elf.half(2); // e_type: ET_EXEC
        elf.half(machine);
        elf.word(1); // e_version
        elf.addr(base + Self::code_offset(class64, count)); // e_entry
        elf.addr(u64::from(header)); // e_phoff
        elf.addr(0); // e_shoff
        elf.word(0); // e_flags
        elf.half(header); // e_ehsize
        elf.half(program_header); // e_phentsize
        elf.half(count); // e_phnum
        elf.half(0); // e_shentsize
        elf.half(0); // e_shnum
        elf.half(0); // e_shstrndx
        for segment in segments {
            elf.segment(segment);
        }
        elf
    }

    fn half(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    fn word(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// An address or offset: 8 bytes in ELF64, 4 in ELF32.
    fn addr(&mut self, v: u64) {
        if self.class64 {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        } else {
            self.word(u32::try_from(v).unwrap_or(u32::MAX));
        }
    }

    fn segment(&mut self, s: &Segment) {
        self.word(s.kind);
        if self.class64 {
            self.word(s.flags);
        }
        self.addr(s.offset);
        self.addr(s.vaddr);
        self.addr(s.vaddr); // p_paddr
        self.addr(s.filesz);
        self.addr(s.memsz);
        if !self.class64 {
            self.word(s.flags);
        }
        self.addr(s.align);
    }
}

/// A static ELF32 i386 executable of one `PT_LOAD` (R+X) and no `PT_GNU_STACK`: for a
/// 32-bit program without that header, `elf_read_implies_exec` is true, so
/// `setup_arg_pages` makes its stack executable (and its personality READ_IMPLIES_EXEC).
fn ia32_stack_program() -> Vec<u8> {
    let size = Executable::code_offset(false, 1) + IA32_STACK_CODE.len() as u64;
    let load = Segment {
        kind: PT_LOAD,
        flags: PF_RX,
        offset: 0,
        vaddr: IA32_BASE,
        filesz: size,
        memsz: size,
        align: PAGE,
    };
    let mut elf = Executable::new(false, 3, IA32_BASE, &[load]); // EM_386
    elf.bytes.extend_from_slice(&IA32_STACK_CODE);
    elf.bytes
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
/// A page: the file part of the zero-fill segment, and the alignment of everything.
const PAGE: u64 = 0x1000;

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
    let load = Segment {
        kind: PT_LOAD,
        flags: PF_RX,
        offset: 0,
        vaddr: ZERO_FILL_BASE,
        filesz: PAGE,
        memsz: 3 * PAGE, // two pages of zero-fill
        align: PAGE,
    };
    let stack = Segment {
        kind: PT_GNU_STACK,
        flags: PF_RW,
        offset: 0,
        vaddr: 0,
        filesz: 0,
        memsz: 0,
        align: 16,
    };
    let mut elf = Executable::new(true, 62, ZERO_FILL_BASE, &[load, stack]); // EM_X86_64
    elf.bytes.extend_from_slice(&zero_fill_code());
    elf.bytes
        .resize(usize::try_from(PAGE).unwrap_or(usize::MAX), 0);
    elf.bytes
}

/// Writes [`zero_fill_program`] to `dst`, mode 0755.
pub(crate) fn write_exec_zero_fill(dst: &str) {
    std::fs::write(dst, zero_fill_program())
        .and_then(|()| std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)))
        .unwrap_or_else(|err| technique::broken(&format!("write {dst}: {err}")));
    println!("wrote {dst}: a program that runs code from its executable zero-filled memory");
}
