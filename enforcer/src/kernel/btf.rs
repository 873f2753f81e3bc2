//! Reads struct layouts from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The kernel program needs the offset of `linux_binprm::file` to reach the executed file.
//! Rust BPF has no CO-RE relocations, so the loader looks the offset up by name here and
//! freezes it into the program's read-only data. Looking it up by name (and checking the
//! member's type) matters: an offset that lands on another field of the same type would
//! pass the verifier.
//!
//! Only the parts of the format needed for that are decoded; every other kind is skipped
//! using its documented trailing size (Documentation/bpf/btf.rst).

use std::path::Path;

/// The kernel's BTF, as exposed in sysfs.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_MIN_LEN: usize = 24;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why a layout could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {source} (is CONFIG_DEBUG_INFO_BTF enabled?)")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF has no function {0}")]
    NoFunction(String),
    #[error("struct {strukt} in kernel BTF has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("{strukt}::{member} is not {expected} in kernel BTF")]
    UnexpectedType {
        strukt: String,
        member: String,
        expected: String,
    },
    #[error("{strukt}::{member} is a bitfield")]
    Bitfield { strukt: String, member: String },
}

/// One decoded type: just enough to follow members and pointers.
#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name_off: u32,
    /// For PTR, TYPEDEF, CONST, VOLATILE, RESTRICT, TYPE_TAG: the referenced type id.
    referenced: u32,
    /// For STRUCT and UNION: members.
    members: Vec<Member>,
    kind_flag: bool,
    /// Number of members, enumerators or parameters.
    vlen: usize,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    offset: u32,
}

/// A parsed BTF blob.
#[derive(Debug)]
pub struct Btf {
    /// Index = type id; id 0 is `void`.
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BtfError> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn usize_at(data: &[u8], at: usize) -> Result<usize, BtfError> {
    usize::try_from(u32_at(data, at)?).map_err(|_| BtfError::Malformed("offset out of range"))
}

impl Btf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads and parses a raw BTF file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses raw (little-endian) BTF.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = usize_at(data, 4)?;
        if hdr_len < HEADER_MIN_LEN {
            return Err(BtfError::Malformed("header too short"));
        }
        let type_off = usize_at(data, 8)?;
        let type_len = usize_at(data, 12)?;
        let str_off = usize_at(data, 16)?;
        let str_len = usize_at(data, 20)?;
        let section = |off: usize, len: usize| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .and_then(|range| data.get(range))
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let type_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();

        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            referenced: 0,
            members: Vec::new(),
            kind_flag: false,
            vlen: 0,
        }];
        let mut at = 0;
        while at < type_data.len() {
            let name_off = u32_at(type_data, at)?;
            let info = u32_at(type_data, at + 4)?;
            let size_or_type = u32_at(type_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let trailing = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        members.push(Member {
                            name_off: u32_at(type_data, m)?,
                            type_id: u32_at(type_data, m + 4)?,
                            offset: u32_at(type_data, m + 8)?,
                        });
                    }
                    12 * vlen
                }
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            at += trailing;
            if at > type_data.len() {
                return Err(BtfError::Malformed("truncated type section"));
            }
            types.push(Type {
                kind,
                name_off,
                referenced: size_or_type,
                members,
                kind_flag,
                vlen,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let start = off as usize;
        let rest = self.strings.get(start..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        // Bounded: a malformed blob with a qualifier cycle must not hang the agent.
        for _ in 0..32 {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.referenced;
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Finds `strukt.member` and its byte offset, looking inside anonymous structs and
    /// unions too (the kernel wraps fields such as `inode::i_nlink` and
    /// `vm_area_struct::vm_flags` in them); bitfields are refused.
    fn member(&self, strukt: &str, member: &str) -> Result<(u32, Member), BtfError> {
        let s = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == strukt.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let (bits, bitfield_size, m) =
            self.find_member(s, member.as_bytes(), 0, 0)?
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.into(),
                    member: member.into(),
                })?;
        if bitfield_size != 0 || bits % 8 != 0 {
            return Err(BtfError::Bitfield {
                strukt: strukt.into(),
                member: member.into(),
            });
        }
        Ok((bits / 8, m))
    }

    /// Depth-first search through anonymous members; returns the bit offset from the
    /// outermost struct and the bitfield size (0: not a bitfield).
    fn find_member(
        &self,
        within: &Type,
        name: &[u8],
        base_bits: u32,
        depth: u32,
    ) -> Result<Option<(u32, u32, Member)>, BtfError> {
        if depth > 8 {
            return Err(BtfError::Malformed("anonymous members nested too deep"));
        }
        for m in &within.members {
            // With kind_flag set, the top 8 bits hold a bitfield size.
            let (bits, bitfield_size) = if within.kind_flag {
                (m.offset & 0x00ff_ffff, m.offset >> 24)
            } else {
                (m.offset, 0)
            };
            let at = base_bits.saturating_add(bits);
            let member_name = self.name(m.name_off);
            if member_name == name {
                return Ok(Some((at, bitfield_size, *m)));
            }
            if member_name.is_empty()
                && let Some(inner) = self.resolve(m.type_id)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(found) = self.find_member(inner, name, at, depth + 1)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Number of parameters of the kernel function `name` (for example `bpf_lsm_bpf`);
    /// an error names a function this kernel lacks, such as an LSM hook.
    pub fn function_arg_count(&self, name: &str) -> Result<u32, BtfError> {
        let func = self
            .types
            .iter()
            .find(|t| t.kind == KIND_FUNC && self.name(t.name_off) == name.as_bytes())
            .ok_or_else(|| BtfError::NoFunction(name.to_owned()))?;
        let proto = self
            .ty(func.referenced)
            .filter(|t| t.kind == KIND_FUNC_PROTO)
            .ok_or(BtfError::Malformed("function without prototype"))?;
        u32::try_from(proto.vlen).map_err(|_| BtfError::Malformed("parameter count"))
    }

    /// Byte offset of `strukt.member`, which must be a pointer to `struct pointee` when
    /// `pointee` is given, or any pointer otherwise.
    pub fn pointer_member_offset(
        &self,
        strukt: &str,
        member: &str,
        pointee: Option<&str>,
    ) -> Result<u32, BtfError> {
        let (offset, m) = self.member(strukt, member)?;
        let unexpected = |expected: String| BtfError::UnexpectedType {
            strukt: strukt.into(),
            member: member.into(),
            expected,
        };
        let ty = self
            .resolve(m.type_id)
            .ok_or(BtfError::Malformed("dangling type id"))?;
        if ty.kind != KIND_PTR {
            return Err(unexpected("a pointer".into()));
        }
        if let Some(pointee) = pointee {
            let target = self.resolve(ty.referenced);
            let ok = target.is_some_and(|t| {
                t.kind == KIND_STRUCT && self.name(t.name_off) == pointee.as_bytes()
            });
            if !ok {
                return Err(unexpected(format!("a pointer to struct {pointee}")));
            }
        }
        Ok(offset)
    }

    /// Byte offset of `strukt.member`, which must be an embedded `struct inner`.
    pub fn struct_member_offset(
        &self,
        strukt: &str,
        member: &str,
        inner: &str,
    ) -> Result<u32, BtfError> {
        self.member_of_type(
            strukt,
            member,
            &format!("an embedded struct {inner}"),
            |id| {
                self.resolve(id).is_some_and(|t| {
                    t.kind == KIND_STRUCT && self.name(t.name_off) == inner.as_bytes()
                })
            },
        )
    }

    /// Byte offset of `strukt.member`, whose declared type must be the typedef `name` (such
    /// as `atomic_t`, a typedef of an anonymous struct).
    pub fn typedef_member_offset(
        &self,
        strukt: &str,
        member: &str,
        name: &str,
    ) -> Result<u32, BtfError> {
        self.member_of_type(strukt, member, &format!("a {name}"), |id| {
            self.ty(id)
                .is_some_and(|t| t.kind == KIND_TYPEDEF && self.name(t.name_off) == name.as_bytes())
        })
    }

    /// Byte offset of `strukt.member` when `fits` accepts its type id; else an error that
    /// says the member should have been `expected`.
    fn member_of_type(
        &self,
        strukt: &str,
        member: &str,
        expected: &str,
        fits: impl FnOnce(u32) -> bool,
    ) -> Result<u32, BtfError> {
        let (offset, m) = self.member(strukt, member)?;
        if fits(m.type_id) {
            Ok(offset)
        } else {
            Err(BtfError::UnexpectedType {
                strukt: strukt.into(),
                member: member.into(),
                expected: expected.into(),
            })
        }
    }

    /// Byte offset of `strukt.member`, which must be an integer of `size` bytes.
    pub fn int_member_offset(
        &self,
        strukt: &str,
        member: &str,
        size: u32,
    ) -> Result<u32, BtfError> {
        let (offset, m) = self.member(strukt, member)?;
        let ty = self
            .resolve(m.type_id)
            .ok_or(BtfError::Malformed("dangling type id"))?;
        // For INT, `referenced` holds the size in bytes (the size/type union).
        if ty.kind != KIND_INT || ty.referenced != size {
            return Err(BtfError::UnexpectedType {
                strukt: strukt.into(),
                member: member.into(),
                expected: format!("a {}-bit integer", size * 8),
            });
        }
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob:
    /// 1: struct file {}           2: ptr -> 1      3: const -> 2
    /// 4: int (char)               5: ptr -> 4
    /// 6: struct linux_binprm { char pad @0; const struct file *file @64 bits; char *filename @128;
    ///    union { char nlink; } @192 }
    /// 7: union { char nlink @0 }    8: func_proto (char, char)    9: func bpf_lsm_x -> 8
    fn sample() -> Vec<u8> {
        let mut strings =
            b"\0file\0linux_binprm\0filename\0char\0pad\0nlink\0bpf_lsm_x\0atomic_t\0inode\0i_writecount\0".to_vec();
        let off = |s: &str, strings: &[u8]| -> u32 {
            let needle = [s.as_bytes(), b"\0"].concat();
            strings
                .windows(needle.len())
                .position(|w| w == needle)
                .map(|p| u32::try_from(p).expect("small"))
                .expect(s)
        };
        let (file, binprm, filename, chr, pad) = (
            off("file", &strings),
            off("linux_binprm", &strings),
            off("filename", &strings),
            off("char", &strings),
            off("pad", &strings),
        );
        let (nlink, func) = (off("nlink", &strings), off("bpf_lsm_x", &strings));
        let mut t = Vec::new();
        let mut push = |words: &[u32]| {
            words
                .iter()
                .for_each(|w| t.extend_from_slice(&w.to_le_bytes()))
        };
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        push(&[file, info(KIND_STRUCT, 0), 0]); // 1
        push(&[0, info(KIND_PTR, 0), 1]); // 2
        push(&[0, info(KIND_CONST, 0), 2]); // 3
        push(&[chr, info(KIND_INT, 0), 1, 8]); // 4
        push(&[0, info(KIND_PTR, 0), 4]); // 5
        push(&[binprm, info(KIND_STRUCT, 4), 32]); // 6
        push(&[pad, 4, 0]);
        push(&[file, 3, 64]);
        push(&[filename, 5, 128]);
        push(&[0, 7, 192]);
        push(&[0, info(KIND_UNION, 1), 1]); // 7
        push(&[nlink, 4, 0]);
        push(&[0, info(KIND_FUNC_PROTO, 2), 4]); // 8
        push(&[0, 4, 0, 4]);
        push(&[func, info(KIND_FUNC, 0), 8]); // 9
        let (atomic, inode, writecount) = (
            off("atomic_t", &strings),
            off("inode", &strings),
            off("i_writecount", &strings),
        );
        push(&[atomic, info(KIND_TYPEDEF, 0), 4]); // 10: typedef char atomic_t
        push(&[inode, info(KIND_STRUCT, 2), 16]); // 11: struct inode
        push(&[writecount, 10, 64]);
        push(&[pad, 4, 0]);
        strings.push(0);
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]); // version, flags
        for w in [
            24u32,
            0,
            u32::try_from(t.len()).expect("small"),
            u32::try_from(t.len()).expect("small"),
            u32::try_from(strings.len()).expect("small"),
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&t);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_pointer_members_through_qualifiers() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(
            btf.pointer_member_offset("linux_binprm", "file", Some("file"))
                .expect("file"),
            8
        );
        assert_eq!(
            btf.pointer_member_offset("linux_binprm", "filename", None)
                .expect("filename"),
            16
        );
    }

    #[test]
    fn finds_members_inside_anonymous_unions() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(
            btf.int_member_offset("linux_binprm", "nlink", 1)
                .expect("nlink"),
            24
        );
    }

    #[test]
    fn counts_function_parameters() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.function_arg_count("bpf_lsm_x").expect("func"), 2);
        assert!(matches!(
            btf.function_arg_count("nope"),
            Err(BtfError::NoFunction(_))
        ));
    }

    #[test]
    fn finds_integer_members_by_size() {
        let btf = Btf::parse(&sample()).expect("parse");
        // `pad` is typed `char` (1 byte) in the sample.
        assert_eq!(
            btf.int_member_offset("linux_binprm", "pad", 1)
                .expect("pad"),
            0
        );
        assert!(matches!(
            btf.int_member_offset("linux_binprm", "pad", 4),
            Err(BtfError::UnexpectedType { .. })
        ));
        assert!(matches!(
            btf.int_member_offset("linux_binprm", "file", 8),
            Err(BtfError::UnexpectedType { .. })
        ));
    }

    #[test]
    fn finds_typedef_members_by_name() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(
            btf.typedef_member_offset("inode", "i_writecount", "atomic_t")
                .expect("typedef"),
            8
        );
        assert!(matches!(
            btf.typedef_member_offset("inode", "pad", "atomic_t"),
            Err(BtfError::UnexpectedType { .. })
        ));
    }

    #[test]
    fn refuses_wrong_types_and_missing_names() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert!(matches!(
            btf.pointer_member_offset("linux_binprm", "filename", Some("file")),
            Err(BtfError::UnexpectedType { .. })
        ));
        assert!(matches!(
            btf.pointer_member_offset("linux_binprm", "pad", None),
            Err(BtfError::UnexpectedType { .. })
        ));
        assert!(matches!(
            btf.pointer_member_offset("linux_binprm", "nope", None),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.pointer_member_offset("cred", "uid", None),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let blob = sample();
        for len in 0..blob.len() {
            // Any prefix either parses (only when the cut is inside the string section) or
            // fails cleanly.
            let _ = Btf::parse(&blob[..len]);
        }
        assert!(matches!(
            Btf::parse(b"\x00\x00"),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn parses_the_running_kernel_when_available() {
        // Debian's kernels publish BTF; a minimal container may not (then CI=true fails).
        if crate::testing::requires("the kernel's BTF", crate::testing::has_kernel_btf()) {
            let btf = Btf::from_sys_fs().expect("vmlinux BTF parses");
            btf.pointer_member_offset("linux_binprm", "file", Some("file"))
                .expect("binprm file");
            btf.int_member_offset("task_struct", "tgid", 4)
                .expect("task tgid");
            btf.int_member_offset("task_struct", "start_time", 8)
                .expect("task start_time");
            btf.pointer_member_offset("task_struct", "real_parent", Some("task_struct"))
                .expect("task real_parent");
            btf.int_member_offset("inode", "i_nlink", 4)
                .expect("inode i_nlink (anonymous union)");
            assert_eq!(
                btf.function_arg_count("bpf_lsm_bprm_check_security")
                    .expect("hook"),
                1
            );
        }
    }
}
