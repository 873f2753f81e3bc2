//! The tile store answers exactly as the leaves themselves do: same roots, same proofs,
//! across reopen, batching and crashes; and damaged stores are refused by name.

use std::path::{Path, PathBuf};

use crate::audit::tlog::tile_path::tile_index_path;
use crate::audit::tlog::{
    Checkpoint, NoteSigner, NoteVerifier, NoteVerifiers, SubtreeHashes, TileError, TileStore,
    TreeHash, VerifyError, consistency_proof, inclusion_proof, leaf_hash, node_hash, tree_root,
    verify_consistency, verify_inclusion,
};
use crate::authz::trust::SigningKey;

fn leaves(n: u64) -> Vec<TreeHash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn idx(n: u64) -> usize {
    usize::try_from(n).expect("an index of this test's leaves")
}

fn open(dir: &Path, height: u8) -> TileStore {
    TileStore::open_with_height(dir, height).expect("open")
}

/// Every complete subtree's hash of a list of leaves, level by level, built by hashing
/// pairs: the same answers as the slice gives (checked against it below), in O(1) each,
/// so that comparing proofs at thousands of sizes stays fast.
struct Levels(Vec<Vec<TreeHash>>);

impl Levels {
    fn new(leaves: &[TreeHash]) -> Self {
        let mut levels = vec![leaves.to_vec()];
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let above = below
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(above);
        }
        Self(levels)
    }
}

impl SubtreeHashes for Levels {
    type Error = std::convert::Infallible;

    fn subtree(&self, level: u8, index: u64) -> Result<TreeHash, Self::Error> {
        Ok(self.0[usize::from(level)][idx(index)])
    }
}

/// Proofs from the store equal proofs from the leaves, and verify, for the given leaf
/// indices and older sizes; the root and the size survive a reopen.
fn check_store(dir: &Path, height: u8, store: &TileStore, all: &Levels, probes: &[u64]) {
    let size = store.size();
    let root = tree_root(all, size).expect("reference root");
    assert_eq!(
        store.root().expect("store root"),
        root,
        "root at size {size}"
    );
    for &i in probes.iter().filter(|i| **i < size) {
        let proof = inclusion_proof(store, i, size).expect("store inclusion");
        assert_eq!(
            proof,
            inclusion_proof(all, i, size).expect("reference"),
            "{i} in {size}"
        );
        let leaf = all.subtree(0, i).expect("leaf");
        verify_inclusion(&leaf, i, size, &proof, &root).expect("verifies");
    }
    for &old in probes.iter().filter(|o| **o <= size) {
        let old_root = tree_root(all, old).expect("old root");
        let proof = consistency_proof(store, old, size).expect("store consistency");
        assert_eq!(
            proof,
            consistency_proof(all, old, size).expect("reference"),
            "{old}->{size}"
        );
        verify_consistency(old, size, &old_root, &root, &proof).expect("consistent");
    }
    let again = open(dir, height);
    assert_eq!(
        (again.size(), again.root().expect("root")),
        (size, root),
        "reopened"
    );
}

#[test]
fn the_reference_levels_answer_as_the_slice_does() {
    let all = leaves(1000);
    let levels = Levels::new(&all);
    for size in (0..=1000)
        .step_by(37)
        .chain([255, 256, 257, 512, 999, 1000])
    {
        let slice = &all[..idx(size)];
        assert_eq!(
            tree_root(&levels, size),
            Ok(tree_root(slice, size).expect("slice"))
        );
        for i in [0, size / 3, size.saturating_sub(1)]
            .into_iter()
            .filter(|i| *i < size)
        {
            assert_eq!(
                inclusion_proof(&levels, i, size).expect("levels"),
                inclusion_proof(slice, i, size).expect("slice")
            );
            assert_eq!(
                consistency_proof(&levels, i, size).expect("levels"),
                consistency_proof(slice, i, size).expect("slice")
            );
        }
    }
}

/// The positions where tiles begin and end, and their neighbours.
fn edges(size: u64, width: u64) -> Vec<u64> {
    let mut probes = vec![0, 1, size / 2, size.saturating_sub(1), size];
    let mut edge = width;
    while edge <= size {
        probes.extend([edge - 1, edge, edge + 1]);
        edge *= width;
    }
    probes
}

#[test]
fn c2sp_tiles_match_the_tree_at_every_size_up_to_1000() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = leaves(1000);
    let levels = Levels::new(&all);
    let mut store = open(dir.path(), 8);
    check_store(dir.path(), 8, &store, &levels, &[0]);
    // Growing by uneven steps visits sizes on both sides of every tile edge.
    let mut size = 0;
    for step in (1..=7).cycle() {
        let next = (size + step).min(1000);
        store.append(&all[idx(size)..idx(next)]).expect("append");
        size = next;
        assert_eq!(store.size(), size);
        let probes = edges(size, 256);
        check_store(dir.path(), 8, &store, &levels, &probes);
        if size == 1000 {
            break;
        }
    }
}

#[test]
fn c2sp_tiles_match_across_the_second_and_third_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = leaves(65537);
    let levels = Levels::new(&all);
    let mut store = open(dir.path(), 8);
    store.append(&all[..65535]).expect("append");
    check_store(dir.path(), 8, &store, &levels, &edges(65535, 256));
    for size in [65536, 65537] {
        store.append(&all[idx(store.size())..size]).expect("append");
        check_store(dir.path(), 8, &store, &levels, &edges(size as u64, 256));
    }
    // The spec's own example: 256 full level-0 tiles, one full level-1 tile, and a
    // partial tile of width 1 at level 0 and at level 2.
    for name in ["0/255", "0/256.p/1", "1/000", "2/000.p/1"] {
        assert!(dir.path().join("tile").join(name).is_file(), "{name}");
    }
    assert!(!dir.path().join("tile/1/001.p").exists());
}

#[test]
fn small_tiles_match_the_tree_at_every_size_across_five_levels() {
    // Height 2 (4 hashes a tile) reaches tile level 4 at 256 leaves: every carry from a
    // level to the next is exercised at a cost that running height 8 could not afford.
    let dir = tempfile::tempdir().expect("tempdir");
    let all = leaves(300);
    let levels = Levels::new(&all);
    let mut store = open(dir.path(), 2);
    for size in 1..=300u64 {
        store
            .append(&all[idx(size - 1)..idx(size)])
            .expect("append");
        let probes = if size % 17 == 0 || size.is_power_of_two() {
            (0..=size).collect()
        } else {
            edges(size, 4)
        };
        check_store(dir.path(), 2, &store, &levels, &probes);
    }
}

#[test]
fn appending_in_batches_writes_the_same_full_tiles_as_appending_at_once() {
    let (batched, whole) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let all = leaves(1000);
    let mut store = open(batched.path(), 3);
    let mut at = 0;
    for batch in (0..).map(|i| i % 13) {
        let end = (at + batch).min(all.len());
        assert_eq!(store.append(&all[at..end]).expect("append"), end as u64);
        at = end;
        if at == all.len() {
            break;
        }
    }
    let mut once = open(whole.path(), 3);
    once.append(&all).expect("append");
    assert_eq!(store.root().expect("root"), once.root().expect("root"));
    let full_tiles = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = walk(dir)
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains(".p"))
            .map(|p| {
                (
                    p.strip_prefix(dir).expect("inside").to_owned(),
                    std::fs::read(&p).expect("read"),
                )
            })
            .collect();
        files.sort();
        files
    };
    let full = full_tiles(batched.path());
    assert!(full.len() > 100, "{} full tiles", full.len());
    assert_eq!(full, full_tiles(whole.path()));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn tile_indices_are_written_in_groups_of_three_digits() {
    for (index, path) in [
        (0, "000"),
        (67, "067"),
        (1000, "x001/000"),
        (1_234_067, "x001/x234/067"),
        (u64::MAX, "x018/x446/x744/x073/x709/x551/615"),
    ] {
        assert_eq!(tile_index_path(index), Path::new(path));
    }
}

/// A store of 1000 leaves (C2SP height): level 0 holds 3 full tiles and 0/003.p/232,
/// level 1 holds 1/000.p/3.
fn store_of_1000() -> (tempfile::TempDir, Vec<TreeHash>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = leaves(1000);
    open(dir.path(), 8).append(&all).expect("append");
    (dir, all)
}

fn reopen_error(dir: &Path) -> TileError {
    TileStore::open(dir).expect_err("a damaged store is refused")
}

fn tile(dir: &Path, name: &str) -> PathBuf {
    dir.join("tile").join(name)
}

#[test]
fn damaged_stores_are_refused_naming_the_file() {
    let (dir, _) = store_of_1000();
    let truncated = tile(dir.path(), "0/001");
    let bytes = std::fs::read(&truncated).expect("read");
    std::fs::write(&truncated, &bytes[..8191]).expect("truncate");
    match reopen_error(dir.path()) {
        TileError::WrongLength {
            path,
            len: 8191,
            expected: 8192,
        } => assert_eq!(path, truncated),
        other => panic!("{other}"),
    }
    std::fs::write(&truncated, &bytes).expect("restore");

    let partial = tile(dir.path(), "0/003.p/232");
    std::fs::write(&partial, [0; 64]).expect("shorten");
    match reopen_error(dir.path()) {
        TileError::WrongLength {
            path,
            len: 64,
            expected: 7424,
        } => assert_eq!(path, partial),
        other => panic!("{other}"),
    }
    std::fs::remove_file(&partial).expect("remove");
    let gap = tile(dir.path(), "0/001");
    std::fs::rename(&gap, dir.path().join("aside")).expect("move");
    match reopen_error(dir.path()) {
        TileError::Missing { path } => assert_eq!(path, gap),
        other => panic!("{other}"),
    }
    std::fs::rename(dir.path().join("aside"), &gap).expect("restore");

    for (name, problem) in [
        ("0/abc", "groups of three digits"),
        ("0/x000/001", "leading zero group"),
        ("0/001.p/256", "partial width"),
        ("0/001.p/07", "partial width"),
        ("64/000", "the level"),
        ("01/000", "the level"),
    ] {
        let stray = tile(dir.path(), name);
        std::fs::create_dir_all(stray.parent().expect("parent")).expect("mkdir");
        std::fs::write(&stray, b"").expect("write");
        match reopen_error(dir.path()) {
            TileError::BadPath { path, problem: p } => {
                assert_eq!(path, stray);
                assert!(p.contains(problem), "{name}: {p}");
            }
            other => panic!("{name}: {other}"),
        }
        std::fs::remove_file(&stray).expect("remove");
    }
}

#[test]
fn upper_levels_that_disagree_with_level_0_are_refused() {
    let (dir, _) = store_of_1000();
    // Level 1 claims a fourth full tile below it that level 0 does not hold.
    let ahead = tile(dir.path(), "1/000.p/4");
    std::fs::write(&ahead, [0; 128]).expect("write");
    match reopen_error(dir.path()) {
        TileError::Ahead { path } => assert_eq!(path, ahead),
        other => panic!("{other}"),
    }
    std::fs::remove_file(&ahead).expect("remove");

    // The newest level-1 hash is checked against the tile it summarises.
    let newest = tile(dir.path(), "1/000.p/3");
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[70] ^= 1;
    std::fs::write(&newest, &bytes).expect("write");
    match reopen_error(dir.path()) {
        TileError::Mismatch { path, index: 2 } => assert_eq!(path, newest),
        other => panic!("{other}"),
    }
}

#[test]
fn upper_levels_a_crash_left_behind_are_written_again() {
    let (dir, all) = store_of_1000();
    // As if the append had stopped after level 0: no level-1 tile at all.
    std::fs::remove_dir_all(tile(dir.path(), "1")).expect("remove level 1");
    // An atomic replace cut short leaves its temporary file, which open must ignore.
    std::fs::write(tile(dir.path(), "0/.003.tmp-1"), b"half").expect("leftover");
    let store = TileStore::open(dir.path()).expect("open repairs");
    assert!(tile(dir.path(), "1/000.p/3").is_file());
    check_store(dir.path(), 8, &store, &Levels::new(&all), &edges(1000, 256));
}

#[test]
fn out_of_range_subtrees_are_errors_not_panics() {
    let (dir, _) = store_of_1000();
    let store = TileStore::open(dir.path()).expect("open");
    for (level, index) in [
        (0, 1000),
        (8, 3),
        (9, 1),
        (10, 0),
        (63, 0),
        (64, 0),
        (0, u64::MAX),
    ] {
        assert!(
            matches!(
                store.subtree(level, index),
                Err(TileError::OutOfRange { .. })
            ),
            "level {level}, index {index}"
        );
    }
    assert!(store.subtree(8, 2).is_ok());
}

#[test]
fn a_flipped_byte_in_a_tile_makes_proofs_fail_against_the_signed_checkpoint() {
    let (dir, all) = store_of_1000();
    let key = SigningKey::from_seed(&[7; 32]);
    let origin = "enforcer.example/tiles";
    let signer = NoteSigner::new(origin, &key).expect("signer");
    let root = tree_root(&all[..], 1000).expect("root");
    let note = Checkpoint::new(origin, 1000, root)
        .and_then(|c| c.sign(&signer))
        .expect("signed checkpoint")
        .to_string();
    let keys = NoteVerifiers::new([NoteVerifier::new(origin, key.public_key()).expect("key")])
        .expect("keys");
    let head = Checkpoint::open(note.as_bytes(), origin, &keys)
        .expect("open")
        .checkpoint;

    // Leaf 7's hash, in the oldest tile: open does not reread old tiles, so the damage is
    // found where it matters, in the proof of its neighbour.
    let damaged = tile(dir.path(), "0/000");
    let mut bytes = std::fs::read(&damaged).expect("read");
    bytes[7 * 32 + 5] ^= 0x40;
    std::fs::write(&damaged, &bytes).expect("write");
    let store = TileStore::open(dir.path()).expect("open");
    let proof = inclusion_proof(&store, 6, head.size()).expect("proof");
    assert!(matches!(
        verify_inclusion(&all[6], 6, head.size(), &proof, head.root()),
        Err(VerifyError::RootMismatch { .. })
    ));
    // A leaf whose proof does not touch the damaged tile still proves.
    let proof = inclusion_proof(&store, 600, head.size()).expect("proof");
    verify_inclusion(&all[600], 600, head.size(), &proof, head.root()).expect("untouched");
}

/// A reader beside the writer sees the tree of any size the writer appended up to (every
/// size a checkpoint was signed for) with the same roots and proofs, writes nothing, and
/// refuses a size that was never appended up to.
#[test]
fn a_read_only_view_serves_every_appended_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = leaves(70_000);
    let reference = Levels::new(&all);
    let mut store = TileStore::open(dir.path()).expect("open");
    let mut sizes = Vec::new();
    for step in [1u64, 255, 1, 300, 65_536, 3_907] {
        let from = store.size();
        store
            .append(&all[idx(from)..idx(from + step)])
            .expect("append");
        sizes.push(store.size());
    }
    for &size in &sizes {
        let view = TileStore::open_read_only(dir.path(), size).expect("read-only");
        assert_eq!(
            view.root().expect("root"),
            tree_root(&reference, size).expect("ref")
        );
        for leaf in [0, size / 2, size - 1] {
            let proof = inclusion_proof(&view, leaf, size).expect("inclusion");
            assert_eq!(proof, inclusion_proof(&reference, leaf, size).expect("ref"));
        }
        let old = size / 3;
        assert_eq!(
            consistency_proof(&view, old, size).expect("consistency"),
            consistency_proof(&reference, old, size).expect("ref")
        );
    }
    let mut view = TileStore::open_read_only(dir.path(), 257).expect("read-only");
    assert!(matches!(view.append(&all[..1]), Err(TileError::ReadOnly)));
    assert!(matches!(
        TileStore::open_read_only(dir.path(), 299),
        Err(TileError::Unpublished { size: 299, .. })
    ));
}
