//! Names of C2SP `tlog-tiles` files, written and read, and the listing of a store.
//! Only the canonical spelling of a tile's name is accepted, so one tile has one name.

use std::path::{Path, PathBuf};

use super::merkle::MAX_LEVEL;
use super::tiles::{TileError, io_error};

/// `N` as the spec writes it: groups of three digits, all but the last prefixed with `x`.
pub(super) fn tile_index_path(index: u64) -> PathBuf {
    let mut groups = Vec::new();
    let mut rest = index;
    loop {
        groups.push(rest % 1000);
        rest /= 1000;
        if rest == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| {
            if i == last {
                format!("{g:03}")
            } else {
                format!("x{g:03}")
            }
        })
        .collect()
}

/// Reads `<L>/<N>[.p/<W>]` (as path components): level, index and partial width.
/// Only the canonical spelling is taken, so one tile has one name.
pub(super) fn parse_tile_path(
    parts: &[&str],
    width: u64,
) -> Result<(u8, u64, Option<u64>), &'static str> {
    let (level, rest) = parts.split_first().ok_or("empty")?;
    let level = parse_decimal(level)
        .and_then(|l| u8::try_from(l).ok())
        .filter(|l| *l <= MAX_LEVEL)
        .ok_or("the level is not a number from 0 to 63")?;
    let (index_parts, partial) = match rest {
        [init @ .., last, w] if last.ends_with(".p") => {
            let w = parse_decimal(w)
                .filter(|w| (1..width).contains(w))
                .ok_or("the partial width is not a number from 1 to 255")?;
            let mut parts = init.to_vec();
            parts.push(&last[..last.len() - 2]);
            (parts, Some(w))
        }
        _ => (rest.to_vec(), None),
    };
    let mut index: u64 = 0;
    let last = index_parts.len().checked_sub(1).ok_or("no tile index")?;
    for (i, part) in index_parts.iter().enumerate() {
        let digits = if i < last {
            part.strip_prefix('x')
        } else {
            Some(*part)
        };
        let group = digits
            .filter(|d| d.len() == 3)
            .and_then(parse_digits)
            .ok_or("the tile index is not groups of three digits like x001/x234/067")?;
        index = index
            .checked_mul(1000)
            .and_then(|i| i.checked_add(group))
            .ok_or("the tile index exceeds 2^64 - 1")?;
    }
    let canonical = tile_index_path(index);
    if canonical
        .iter()
        .ne(index_parts.iter().map(std::ffi::OsStr::new))
    {
        return Err("the tile index has a leading zero group");
    }
    Ok((level, index, partial))
}

/// A decimal number with no sign and no leading zero.
fn parse_decimal(text: &str) -> Option<u64> {
    parse_digits(text).filter(|n| n.to_string() == text)
}

fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Every regular file under `dir` with its length, skipping names that begin with `.`
/// (the temporary files of an atomic replace that a crash interrupted).
pub(super) fn list_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>, TileError> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let entry = entry.map_err(io_error("list", &dir))?;
            let path = entry.path();
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let meta = entry.metadata().map_err(io_error("stat", &path))?;
            if meta.is_dir() {
                dirs.push(path);
            } else {
                files.push((path, meta.len()));
            }
        }
    }
    Ok(files)
}
