//! The tree-hash store beside the log: C2SP `tlog-tiles`, so that roots and proofs cost
//! O(log n) tile reads instead of a reread of the log.
//!
//! Layout (under `<dir>/tile/`, as the spec serves it under `<prefix>/tile/`):
//! `<L>/<N>` is the full tile number `N` of level `L`, 256 hashes of 32 bytes concatenated;
//! `<L>/<N>.p/<W>` is a partial tile of `W` (1 to 255) hashes. `N` is written in groups of
//! three digits, all but the last prefixed with `x` (`1234067` is `x001/x234/067`), so no
//! directory holds more than 1000 entries and no name is both a file and a directory.
//! A level-0 tile holds leaf hashes; each hash of a level-`L` tile is the root of one
//! *full* tile of level `L - 1`. Partial tiles are never hashed into the level above.
//!
//! The store's size is what level 0 holds (its full tiles and its widest partial tile).
//! Every file is written once, under a new name, by a rename over a temporary file, and
//! every append writes level 0 first and each level before the one above, then makes the
//! whole batch durable with one `syncfs` (a sync per tile would cost ~40 per checkpoint).
//! So a crash leaves whole tiles only, the upper levels at most behind level 0, and a size
//! between the old and the new: a prefix of what was appended. A power loss before the
//! sync may also leave a new tile empty or missing; open refuses such a store by name,
//! and the log's writer then rebuilds it from the log (`audit::tree`). [`TileStore::open`] fills in the upper levels that fell
//! behind, and refuses (naming the file) a store whose tiles cannot come from one tree:
//! a gap, a tile of the wrong length, a name outside the spec, an upper level that covers
//! more than the level below, or a newest upper hash that is not the root of its tile.
//!
//! Tiles are a cache of the log, not evidence: they are not signed, and a flipped byte in
//! an older tile is not looked for on open (that would reread everything). It surfaces
//! where it matters: a proof made from a damaged tile does not verify against the signed
//! checkpoint. Partial tiles stay after they are superseded, since the spec asks a log to
//! serve the partial tiles of every size it published a checkpoint for.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::merkle::{MAX_LEVEL, SubtreeHashes, TREE_HASH_LEN, TreeHash, complete_root, tree_root};
use super::tile_path::{list_files, parse_tile_path, tile_index_path};
use crate::fsutil;

/// Height of a tile in C2SP `tlog-tiles`: a tile spans 8 levels and holds 256 hashes.
pub const TILE_HEIGHT: u8 = 8;

/// Same modes as the audit log: the tiles reveal no more than the log does.
const TILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

/// Why the tile store could not be opened, read or appended to. Every error about the
/// store's content names the file.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is not a C2SP tlog-tiles path ({problem}); remove it or move the store aside",
        .path.display()
    )]
    BadPath {
        path: PathBuf,
        problem: &'static str,
    },
    #[error(
        "{} holds {len} bytes, not the {expected} of a tile of its width: it is truncated \
         or damaged; the tiles derive from the log and can be rebuilt from it",
        .path.display()
    )]
    WrongLength {
        path: PathBuf,
        len: u64,
        expected: u64,
    },
    #[error(
        "{} is missing, yet tiles after it exist: the store has a gap; rebuild the tiles \
         from the log",
        .path.display()
    )]
    Missing { path: PathBuf },
    #[error(
        "{} covers more leaves than the tiles of the level below: the store does not \
         describe one tree; rebuild the tiles from the log",
        .path.display()
    )]
    Ahead { path: PathBuf },
    #[error(
        "hash {index} of {} is not the root of the tile below it: the tiles do not \
         describe one tree; rebuild them from the log",
        .path.display()
    )]
    Mismatch { path: PathBuf, index: u64 },
    #[error("the subtree at level {level}, index {index} is not in the tree of {size} leaves")]
    OutOfRange { level: u8, index: u64, size: u64 },
    #[error("appending {count} leaves to a tree of {size} would exceed 2^64 - 1 leaves")]
    TooLarge { size: u64, count: usize },
    #[error(
        "an earlier append failed part-way: reopen the store, which then holds a prefix of \
         the leaves appended, and append the rest again"
    )]
    Poisoned,
    #[error(
        "the tiles of the tree of {size} leaves are incomplete ({} is missing): that size \
         was never checkpointed, or the store was damaged; rebuild the tiles from the log",
        .path.display()
    )]
    Unpublished { size: u64, path: PathBuf },
    #[error("the tile store is open read-only")]
    ReadOnly,
}

pub(super) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TileError {
    let path = path.to_owned();
    move |source| TileError::Io {
        action,
        path,
        source,
    }
}

/// The tiles of one level found on disk: full tile indices, and the widths of the
/// partial tiles at each index.
#[derive(Debug, Default)]
struct LevelFiles {
    full: BTreeSet<u64>,
    partial: BTreeMap<u64, BTreeSet<u64>>,
}

/// A C2SP `tlog-tiles` store in a directory: see the module documentation.
#[derive(Debug)]
pub struct TileStore {
    /// The `tile` directory.
    dir: PathBuf,
    /// 8 in production; tests use less to reach many levels with few leaves.
    height: u8,
    size: u64,
    /// For each level, the hashes of its rightmost, incomplete tile (`count % width` of
    /// them). They are the hashes an append extends and the ones read most often, so they
    /// stay in memory; full tiles never change and are read from disk (page cache).
    partial: Vec<Vec<TreeHash>>,
    poisoned: bool,
    read_only: bool,
}

impl TileStore {
    /// Opens the store in `dir` (its tiles under `dir/tile/`), creating it if missing.
    ///
    /// Upper levels that fell behind level 0 in a crash are written again from the tiles
    /// below them, so open needs write access.
    pub fn open(dir: &Path) -> Result<Self, TileError> {
        Self::open_with_height(dir, TILE_HEIGHT)
    }

    /// [`TileStore::open`] with tiles of `2^height` hashes: only tests use a height other
    /// than C2SP's 8, to cover many tile levels with few leaves. `height` is 1 to 8.
    pub(super) fn open_with_height(dir: &Path, height: u8) -> Result<Self, TileError> {
        debug_assert!((1..=TILE_HEIGHT).contains(&height), "tile height {height}");
        let tiles = dir.join("tile");
        fsutil::create_dir_durably(&tiles, DIR_MODE).map_err(io_error("create", &tiles))?;
        let mut store = Self {
            dir: tiles,
            height,
            size: 0,
            partial: Vec::new(),
            poisoned: false,
            read_only: false,
        };
        let found = store.scan()?;
        let none = LevelFiles::default();
        let (full, width) = store.stored(0, found.get(&0).unwrap_or(&none))?;
        store.size = full * store.width() + width;
        store.partial.push(store.read_partial(0, full, width)?);
        let mut top = found.keys().last().copied().unwrap_or(0);
        while store.count(top + 1) > 0 {
            top += 1;
        }
        for level in 1..=top {
            store.catch_up(level, found.get(&level).unwrap_or(&none))?;
        }
        if top > 0 {
            // What catching up wrote, made durable before anything builds on it.
            fsutil::sync_filesystem(&store.dir).map_err(io_error("sync", &store.dir))?;
        }
        Ok(store)
    }

    /// The tree of the first `size` leaves of the store in `dir`, read-only, for readers
    /// that run beside the writer (`audit prove`, `audit consistency`).
    ///
    /// It reads only tiles that exist whole for any size the writer checkpointed: the
    /// full tiles below `size` and the partial tiles of width `size % 256` at each level,
    /// which the writer wrote before it signed a checkpoint of that size and never
    /// removes. It writes nothing and repairs nothing, so it cannot race the writer.
    pub fn open_read_only(dir: &Path, size: u64) -> Result<Self, TileError> {
        let mut store = Self {
            dir: dir.join("tile"),
            height: TILE_HEIGHT,
            size,
            partial: Vec::new(),
            poisoned: false,
            read_only: true,
        };
        let mut level = 0;
        while level <= MAX_LEVEL && store.count(level) > 0 {
            let count = store.count(level);
            let (index, width) = (count / store.width(), count % store.width());
            let tile = store
                .read_partial(level, index, width)
                .map_err(|e| match e {
                    TileError::Missing { path } => TileError::Unpublished { size, path },
                    other => other,
                })?;
            store.partial.push(tile);
            level += 1;
        }
        Ok(store)
    }

    /// The number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree of all the leaves.
    pub fn root(&self) -> Result<TreeHash, TileError> {
        tree_root(self, self.size)
    }

    /// Appends leaf hashes and writes every tile that changes; returns the new size.
    ///
    /// If it fails, the store refuses further appends (the files may hold more than this
    /// value knows): reopen it.
    pub fn append(&mut self, leaves: &[TreeHash]) -> Result<u64, TileError> {
        if self.read_only {
            return Err(TileError::ReadOnly);
        }
        if self.poisoned {
            return Err(TileError::Poisoned);
        }
        let too_large = TileError::TooLarge {
            size: self.size,
            count: leaves.len(),
        };
        let new_size = u64::try_from(leaves.len())
            .ok()
            .and_then(|n| self.size.checked_add(n))
            .ok_or(too_large)?;
        // Work on a copy, so that a failure leaves this value as it was.
        let mut partial = self.partial.clone();
        let mut new = leaves.to_vec();
        let mut level = 0;
        while !new.is_empty() {
            if partial.len() <= usize::from(level) {
                partial.push(Vec::new());
            }
            let tile = &mut partial[usize::from(level)];
            match self.extend(level, self.count(level), tile, &new) {
                Ok(roots) => new = roots,
                Err(e) => {
                    self.poisoned = true;
                    return Err(e);
                }
            }
            level += 1;
        }
        if !leaves.is_empty()
            && let Err(e) = fsutil::sync_filesystem(&self.dir)
        {
            self.poisoned = true;
            return Err(io_error("sync", &self.dir)(e));
        }
        self.partial = partial;
        self.size = new_size;
        Ok(new_size)
    }

    fn width(&self) -> u64 {
        1 << self.height
    }

    /// How many hashes level `level` holds in the tree of `self.size` leaves.
    fn count(&self, level: u8) -> u64 {
        let shift = u32::from(level) * u32::from(self.height);
        self.size.checked_shr(shift).unwrap_or(0)
    }

    /// Adds `new` hashes to level `level`, which holds `count` hashes of which `tile` are
    /// the rightmost incomplete tile's. Writes each tile this completes, then the new
    /// partial tile, and returns the roots of the completed tiles: what the level above
    /// gains.
    fn extend(
        &self,
        level: u8,
        count: u64,
        tile: &mut Vec<TreeHash>,
        new: &[TreeHash],
    ) -> Result<Vec<TreeHash>, TileError> {
        let width = self.width();
        let mut index = count / width;
        let mut roots = Vec::new();
        for hash in new {
            tile.push(*hash);
            if tile.len() as u64 == width {
                self.write_tile(level, index, None, tile)?;
                roots.push(complete_root(tile));
                tile.clear();
                index += 1;
            }
        }
        if !new.is_empty() && !tile.is_empty() {
            self.write_tile(level, index, Some(tile.len() as u64), tile)?;
        }
        Ok(roots)
    }

    /// Brings level `level >= 1` in line with the level below after open: refuses it if it
    /// is ahead or its newest hash is wrong, and writes the hashes a crash left out.
    fn catch_up(&mut self, level: u8, files: &LevelFiles) -> Result<(), TileError> {
        let expected = self.count(level);
        let (full, width) = self.stored(level, files)?;
        let stored = full * self.width() + width;
        let newest_file = if width > 0 {
            self.tile_path(level, full, Some(width))
        } else {
            self.tile_path(level, full.saturating_sub(1), None)
        };
        if stored > expected {
            return Err(TileError::Ahead { path: newest_file });
        }
        let mut tile = self.read_partial(level, full, width)?;
        if stored > 0 {
            let newest =
                match tile.last() {
                    Some(hash) => *hash,
                    None => *self.read_tile(level, full - 1, None)?.last().ok_or(
                        TileError::Missing {
                            path: newest_file.clone(),
                        },
                    )?,
                };
            if newest != self.tile_root(level - 1, stored - 1)? {
                return Err(TileError::Mismatch {
                    path: newest_file,
                    index: (stored - 1) % self.width(),
                });
            }
        }
        let missing = (stored..expected)
            .map(|index| self.tile_root(level - 1, index))
            .collect::<Result<Vec<_>, _>>()?;
        self.extend(level, stored, &mut tile, &missing)?;
        self.partial.push(tile);
        Ok(())
    }

    /// What a level's files hold without a gap: `(full tiles, width of the widest partial
    /// tile after them)`.
    fn stored(&self, level: u8, files: &LevelFiles) -> Result<(u64, u64), TileError> {
        let full = files.full.len() as u64;
        if files.full.last().is_some_and(|last| last + 1 != full) {
            let gap = (0..)
                .zip(&files.full)
                .find(|(i, n)| i != *n)
                .map_or(0, |(i, _)| i);
            return Err(TileError::Missing {
                path: self.tile_path(level, gap, None),
            });
        }
        if files.partial.range(full + 1..).next().is_some() {
            return Err(TileError::Missing {
                path: self.tile_path(level, full, None),
            });
        }
        let width = files
            .partial
            .get(&full)
            .and_then(|widths| widths.last())
            .copied()
            .unwrap_or(0);
        Ok((full, width))
    }

    fn read_partial(&self, level: u8, index: u64, width: u64) -> Result<Vec<TreeHash>, TileError> {
        if width == 0 {
            return Ok(Vec::new());
        }
        self.read_tile(level, index, Some(width))
    }

    /// The root of full tile `index` of level `level`: hash `index` of the level above.
    fn tile_root(&self, level: u8, index: u64) -> Result<TreeHash, TileError> {
        Ok(complete_root(&self.read_tile(level, index, None)?))
    }

    fn read_tile(
        &self,
        level: u8,
        index: u64,
        partial: Option<u64>,
    ) -> Result<Vec<TreeHash>, TileError> {
        let path = self.tile_path(level, index, partial);
        let bytes = std::fs::read(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => TileError::Missing { path: path.clone() },
            _ => io_error("read", &path)(source),
        })?;
        let expected = partial.unwrap_or(self.width()) * TREE_HASH_LEN as u64;
        let wrong_length = || TileError::WrongLength {
            path: path.clone(),
            len: bytes.len() as u64,
            expected,
        };
        if bytes.len() as u64 != expected {
            return Err(wrong_length());
        }
        bytes
            .chunks_exact(TREE_HASH_LEN)
            .map(|chunk| TreeHash::from_slice(chunk).ok_or_else(wrong_length))
            .collect()
    }

    fn write_tile(
        &self,
        level: u8,
        index: u64,
        partial: Option<u64>,
        hashes: &[TreeHash],
    ) -> Result<(), TileError> {
        let path = self.tile_path(level, index, partial);
        if let Some(parent) = path.parent() {
            fsutil::create_dir_durably(parent, DIR_MODE).map_err(io_error("create", parent))?;
        }
        let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
        // Made durable with the rest of the batch by one sync at the end of the append.
        fsutil::replace_unsynced(&path, &bytes, TILE_MODE).map_err(io_error("write", &path))
    }

    fn tile_path(&self, level: u8, index: u64, partial: Option<u64>) -> PathBuf {
        let mut path = self
            .dir
            .join(level.to_string())
            .join(tile_index_path(index));
        if let Some(width) = partial {
            path.as_mut_os_string().push(".p");
            path.push(width.to_string());
        }
        path
    }

    /// Every tile on disk, by level, with each file's length checked.
    fn scan(&self) -> Result<BTreeMap<u8, LevelFiles>, TileError> {
        let mut levels = BTreeMap::new();
        for (path, len) in list_files(&self.dir)? {
            let bad = |problem| TileError::BadPath {
                path: path.clone(),
                problem,
            };
            let rel = path
                .strip_prefix(&self.dir)
                .map_err(|_| bad("outside the store"))?;
            let parts: Option<Vec<&str>> = rel.iter().map(|p| p.to_str()).collect();
            let parts = parts.ok_or(bad("not UTF-8"))?;
            if parts.first() == Some(&"entries") {
                // Entry bundles share the `tile/` prefix in the spec; they are not ours.
                continue;
            }
            let (level, index, partial) = parse_tile_path(&parts, self.width()).map_err(bad)?;
            let expected = partial.unwrap_or(self.width()) * TREE_HASH_LEN as u64;
            if len != expected {
                return Err(TileError::WrongLength {
                    path,
                    len,
                    expected,
                });
            }
            let files: &mut LevelFiles = levels.entry(level).or_default();
            match partial {
                None => {
                    files.full.insert(index);
                }
                Some(width) => {
                    files.partial.entry(index).or_default().insert(width);
                }
            }
        }
        Ok(levels)
    }
}

impl SubtreeHashes for TileStore {
    type Error = TileError;

    fn subtree(&self, level: u8, index: u64) -> Result<TreeHash, TileError> {
        let out_of_range = TileError::OutOfRange {
            level,
            index,
            size: self.size,
        };
        if level > MAX_LEVEL {
            return Err(out_of_range);
        }
        // The node is the root of `span` consecutive hashes of one tile at `tile_level`.
        let (tile_level, within) = (level / self.height, level % self.height);
        let span = 1u64 << within;
        let count = self.count(tile_level);
        let Some(first) = index
            .checked_mul(span)
            .filter(|f| f.checked_add(span).is_some_and(|end| end <= count))
        else {
            return Err(out_of_range);
        };
        let (tile_index, width) = (first / self.width(), self.width());
        let read;
        let tile = if tile_index == count / width {
            self.partial
                .get(usize::from(tile_level))
                .map_or(&[][..], Vec::as_slice)
        } else {
            read = self.read_tile(tile_level, tile_index, None)?;
            &read[..]
        };
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a position within a tile is below 256"
        )]
        let start = (first % width) as usize;
        tile.get(start..start + (1 << within))
            .map(complete_root)
            .ok_or(out_of_range)
    }
}
