//! A per-process cache of what opening a file beneath the root found, so that a keep-alive
//! request for a file served a moment ago costs no `openat2`, `fstat`, `read` or `close`: a
//! small file's bytes (answered with one gathered send straight after the head), or a larger
//! file's open descriptor (answered with `sendfile` from it, which with an explicit offset
//! moves no file position, so one descriptor serves every request), with the metadata its
//! validators and length come from.
//!
//! What may be cached is only ever the result of the safe open: an entry is keyed by the
//! resolved relative path that `path::resolve` produced and `open::beneath` opened with
//! `RESOLVE_BENEATH` (and the dot rule checked on where symlinks led), and what it holds is
//! that open's descriptor or bytes read from it. No path string is ever opened later without
//! those checks. The configuration that admitted an entry is the one the cache belongs to:
//! a reload builds a new docroot, and a new, empty cache.
//!
//! Staleness is bounded by [`REVALIDATE`]: an entry is served for at most that long after it
//! was last checked, then the path is opened again the safe way and the new descriptor's
//! metadata compared (device, inode, size, modification and change times). A file edited in
//! place, replaced by a rename, swapped for a symlink out of the root or deleted is therefore
//! noticed within a second: a new version is read, a refused or missing one is 404 and the
//! entry goes. A filesystem stamps times with a coarse clock, so a change right after a read
//! may leave every field as it was; an entry whose change time is within [`RACY`] of its read
//! is read again at each check until it has settled (git's "racily clean" rule).
//!
//! Bounds: at most `entries` entries (and never more than half the descriptors
//! `RLIMIT_NOFILE` leaves, since each larger file holds one), and at most `bytes` bytes of
//! small-file bodies and paths; the least recently used entry goes first ([`Lru`]). The cache
//! lives in the process that serves: a prefork worker fills its own; in fork mode each child
//! starts from the master's, which stays empty (the master never serves), so only requests on
//! one keep-alive connection share it.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an entry is served before the file is looked at again: the staleness bound.
pub(super) const REVALIDATE: Duration = Duration::from_secs(1);

/// An entry no request has used for this long is dropped, at the next file the process opens
/// (a miss, or an entry's check): a larger file's entry holds it open, so a file that a deploy
/// deleted or replaced would otherwise keep its disk space, and a descriptor, for as long as
/// the worker lives.
pub(super) const IDLE: Duration = Duration::from_secs(30);

/// A change this close to a read may carry the same timestamps as the version read
/// (timestamps come from a coarse clock: a scheduler tick, or one or two seconds on some
/// filesystems), so such an entry's bytes are read again at each check until it is older.
const RACY: Duration = Duration::from_secs(2);

/// Descriptors kept for the worker's own use (listeners, the connection, logs, a file being
/// opened) before the cache may take half of what `RLIMIT_NOFILE` leaves.
const FD_RESERVE: u64 = 64;

/// How much the cache may hold; zero entries turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub entries: usize,
    pub bytes: u64,
}

impl Limits {
    pub const OFF: Limits = Limits {
        entries: 0,
        bytes: 0,
    };
}

/// What identifies one version of a file: when any of it differs, the file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime: (i64, i64),
    pub(super) ctime: (i64, i64),
}

impl Stamp {
    pub(super) fn of(m: &Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether the version read at `read` can no longer share its timestamps with a later
    /// change: its change time is more than [`RACY`] before the read.
    fn settled_at(&self, read: SystemTime) -> bool {
        let (secs, nanos) = self.ctime;
        let changed = u64::try_from(secs)
            .ok()
            .and_then(|s| UNIX_EPOCH.checked_add(Duration::new(s, 0)))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))))
            .unwrap_or(UNIX_EPOCH);
        changed
            .checked_add(RACY)
            .is_some_and(|settled| settled < read)
    }
}

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub(super) enum Body {
    /// The whole of a small file, read once.
    Bytes(Rc<[u8]>),
    /// An open descriptor, read with an explicit offset (`pread`, `sendfile`).
    File(Rc<File>),
}

/// A file as the answer needs it: one version's stamp, its modification time, its bytes.
#[derive(Debug, Clone)]
pub(super) struct Version {
    pub(super) stamp: Stamp,
    pub(super) modified: Option<SystemTime>,
    pub(super) body: Body,
}

/// What is known of one precompressed sibling (`file.br`, ...) of a cached file since the
/// file was last checked. A sibling found is its own entry, under its own path; the
/// original's entry remembers only whether to look, so a keep-alive request for a file with
/// no sibling costs no system call more than before siblings existed (the looks are made once
/// per check, at most once a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Probe {
    /// Not looked for since the last check.
    #[default]
    Unknown,
    /// Missing, not a regular file, refused by the safe open, or older than the original.
    Absent,
    /// Found usable: served from its own entry (or opened again when that is gone).
    Present,
}

#[derive(Debug)]
struct Entry {
    version: Version,
    /// When the file was last found to be this version.
    checked: Instant,
    /// The bytes cannot be older than the stamp says (see [`RACY`]); a descriptor always reads
    /// the file as it is now.
    settled: bool,
    /// Its siblings, by `encoding::Coding::index`; forgotten at each check, so a sibling
    /// made, removed or made stale is seen within [`REVALIDATE`].
    siblings: [Probe; 3],
}

/// The cache of one process (see the module's docs).
#[derive(Debug)]
pub(super) struct FileCache {
    lru: Lru<Entry>,
    /// Files up to this size are kept as bytes, larger ones as descriptors.
    small: u64,
    /// This process has opened a file before: see [`FileCache::admits`].
    warm: bool,
    /// When [`FileCache::admit`] next looks for entries idle for [`IDLE`].
    next_expiry: Option<Instant>,
}

impl FileCache {
    /// A cache within `limits`, files up to `small` bytes kept as bytes; its entries are held
    /// to half the descriptors `RLIMIT_NOFILE` leaves.
    pub(super) fn new(limits: Limits, small: u64) -> FileCache {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        let fd_room = usize::try_from(nofile.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX);
        FileCache {
            lru: Lru::new(limits.entries.min(fd_room), limits.bytes),
            small,
            warm: false,
            next_expiry: None,
        }
    }

    /// Whether the file just opened may be kept: not the first one a process opens. In fork
    /// mode a child usually answers one request, and keeping its file (the body read whole and
    /// copied, the key and the entry allocated) would be that child's largest cost in fresh
    /// heap pages, each a page fault, for an entry no request reads. A process that serves
    /// more keeps files from its second open on, at the price of opening its first file once
    /// more.
    pub(super) fn admits(&mut self) -> bool {
        std::mem::replace(&mut self.warm, true)
    }

    pub(super) fn is_on(&self) -> bool {
        self.lru.max_entries > 0
    }

    /// The version kept for `key` if it was checked less than [`REVALIDATE`] before `now`.
    pub(super) fn fresh(&mut self, key: &[u8], now: Instant) -> Option<Version> {
        let entry = self.lru.get(key)?;
        (now.saturating_duration_since(entry.checked) < REVALIDATE).then(|| entry.version.clone())
    }

    /// What is known of the sibling `coding` (an `encoding::Coding::index`) of the file
    /// kept for `key`; `Unknown` when no entry is kept.
    pub(super) fn probe(&mut self, key: &[u8], coding: usize) -> Probe {
        self.lru
            .get(key)
            .and_then(|e| e.siblings.get(coding).copied())
            .unwrap_or_default()
    }

    /// Records what a look for the sibling `coding` of the file kept for `key` found (nothing
    /// when no entry is kept).
    pub(super) fn set_probe(&mut self, key: &[u8], coding: usize, probe: Probe) {
        if let Some(slot) = self.lru.get(key).and_then(|e| e.siblings.get_mut(coding)) {
            *slot = probe;
        }
    }

    /// Drops the entries idle for [`IDLE`] at `now`. An entry in use is checked again each
    /// [`REVALIDATE`], so its check time follows its use, and the least recently used end
    /// holds the ones checked longest ago: the walk stops at the first one still in use.
    fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.lru.oldest() {
            if now.saturating_duration_since(entry.checked) < IDLE {
                return;
            }
            self.lru.evict_oldest();
        }
    }

    /// `key` no longer names a file that can be served.
    pub(super) fn forget(&mut self, key: &[u8]) {
        self.lru.remove(key);
    }

    /// `file` was just opened the safe way at `key`, as the regular file `meta` describes,
    /// and looked at no earlier than `checked`: returns how to serve it, and keeps it. The
    /// entry kept is reused when it is the same version; otherwise a small file is read whole
    /// (a short read, the file shrinking meanwhile, is served as read and not kept).
    pub(super) fn admit(
        &mut self,
        key: &[u8],
        file: File,
        meta: &Metadata,
        checked: Instant,
    ) -> io::Result<Version> {
        // Here rather than in `fresh`, which every cached request runs (it cost 60
        // instructions a request there): a process that serves anything opens a file, a
        // miss or an entry's check, at least once a second.
        if self.next_expiry.is_none_or(|t| checked >= t) {
            self.next_expiry = checked.checked_add(REVALIDATE);
            self.expire(checked);
        }
        let stamp = Stamp::of(meta);
        if let Some(entry) = self.lru.get(key) {
            let same = entry.version.stamp == stamp;
            if same && (entry.settled || matches!(entry.version.body, Body::File(_))) {
                entry.checked = checked;
                entry.siblings = Default::default();
                return Ok(entry.version.clone());
            }
        }
        let read_at = SystemTime::now();
        let fits = stamp.size <= self.small
            && stamp.size.saturating_add(key.len() as u64) <= self.lru.max_cost;
        let (body, cost) = if fits {
            let len = usize::try_from(stamp.size).map_err(|_| io::ErrorKind::InvalidData)?;
            let mut bytes = vec![0; len];
            let got = super::answer::read_at_most(&file, &mut bytes, 0)?;
            bytes.truncate(got);
            let body = Body::Bytes(Rc::from(bytes));
            if got != len {
                self.lru.remove(key);
                return Ok(Version {
                    stamp,
                    modified: meta.modified().ok(),
                    body,
                });
            }
            (body, stamp.size.saturating_add(key.len() as u64))
        } else {
            (Body::File(Rc::new(file)), key.len() as u64)
        };
        let version = Version {
            stamp,
            modified: meta.modified().ok(),
            body,
        };
        let entry = Entry {
            version: version.clone(),
            checked,
            settled: stamp.settled_at(read_at),
            siblings: Default::default(),
        };
        self.lru.insert(key, entry, cost);
        Ok(version)
    }
}

/// No slot: the end of the list.
const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Slot<V> {
    key: Box<[u8]>,
    value: V,
    cost: u64,
    /// Neighbours towards the most and the least recently used.
    newer: usize,
    older: usize,
}

/// A least-recently-used map from byte strings to values, bounded in entries and in the sum
/// of a cost each entry states; a pure data structure (no I/O, no clock), so its eviction is
/// tested alone. Slots live in one vector linked by index, so every operation is O(1).
#[derive(Debug)]
pub(super) struct Lru<V> {
    index: HashMap<Box<[u8]>, usize>,
    slots: Vec<Option<Slot<V>>>,
    /// Slots of `slots` that are `None`, for reuse.
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
    cost: u64,
    max_entries: usize,
    max_cost: u64,
}

impl<V> Lru<V> {
    pub(super) fn new(max_entries: usize, max_cost: u64) -> Lru<V> {
        // Room for a first few entries, made where the cache is built (the master): a forked
        // child admits its first files without growing the table, which would allocate and
        // write fresh heap pages, each a page fault in a process that lives one connection.
        let first = max_entries.min(16);
        Lru {
            index: HashMap::with_capacity(first),
            slots: Vec::with_capacity(first),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            cost: 0,
            max_entries,
            max_cost,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The sum of the costs of the entries held.
    #[cfg(test)]
    pub(super) fn cost(&self) -> u64 {
        self.cost
    }

    /// The value under `key`, which becomes the most recently used.
    pub(super) fn get(&mut self, key: &[u8]) -> Option<&mut V> {
        let i = *self.index.get(key)?;
        self.unlink(i);
        self.push_newest(i);
        self.slot_mut(i).map(|s| &mut s.value)
    }

    /// Removes and returns the value under `key`.
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let i = self.index.remove(key)?;
        self.take(i)
    }

    /// Keeps `value` under `key` as the most recently used, replacing any value there, and
    /// evicts the least recently used entries until the bounds hold. An entry that could never
    /// fit (no entries allowed, or a cost above the whole budget) is not kept: false.
    pub(super) fn insert(&mut self, key: &[u8], value: V, cost: u64) -> bool {
        self.remove(key);
        if self.max_entries == 0 || cost > self.max_cost {
            return false;
        }
        while self.len() >= self.max_entries || self.cost.saturating_add(cost) > self.max_cost {
            if self.evict_oldest().is_none() {
                return false;
            }
        }
        let slot = Slot {
            key: key.into(),
            value,
            cost,
            newer: NIL,
            older: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(place) = self.slots.get_mut(i) {
                    *place = Some(slot);
                }
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(key.into(), i);
        self.cost = self.cost.saturating_add(cost);
        self.push_newest(i);
        true
    }

    /// The least recently used value.
    fn oldest(&self) -> Option<&V> {
        self.slot(self.oldest).map(|s| &s.value)
    }

    /// Removes and returns the least recently used value.
    fn evict_oldest(&mut self) -> Option<V> {
        let i = self.oldest;
        let key = self.slot(i)?.key.clone();
        self.index.remove(&key);
        self.take(i)
    }

    /// Empties slot `i` (already out of the index) and returns its value.
    fn take(&mut self, i: usize) -> Option<V> {
        self.unlink(i);
        let slot = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        self.cost = self.cost.saturating_sub(slot.cost);
        Some(slot.value)
    }

    fn slot(&self, i: usize) -> Option<&Slot<V>> {
        self.slots.get(i)?.as_ref()
    }

    fn slot_mut(&mut self, i: usize) -> Option<&mut Slot<V>> {
        self.slots.get_mut(i)?.as_mut()
    }

    /// Takes slot `i` out of the recency list (a slot not in it is left alone).
    fn unlink(&mut self, i: usize) {
        let Some((newer, older)) = self.slot(i).map(|s| (s.newer, s.older)) else {
            return;
        };
        if newer == NIL {
            if self.newest == i {
                self.newest = older;
            }
        } else if let Some(n) = self.slot_mut(newer) {
            n.older = older;
        }
        if older == NIL {
            if self.oldest == i {
                self.oldest = newer;
            }
        } else if let Some(o) = self.slot_mut(older) {
            o.newer = newer;
        }
        if let Some(s) = self.slot_mut(i) {
            s.newer = NIL;
            s.older = NIL;
        }
    }

    /// Puts slot `i` (unlinked) at the most recently used end.
    fn push_newest(&mut self, i: usize) {
        let old_newest = self.newest;
        if let Some(s) = self.slot_mut(i) {
            s.older = old_newest;
            s.newer = NIL;
        }
        match self.slot_mut(old_newest) {
            Some(n) => n.newer = i,
            None => self.oldest = i,
        }
        self.newest = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys from least to most recently used, walking the list both ways.
    fn order<V>(lru: &Lru<V>) -> Vec<Vec<u8>> {
        let mut up = Vec::new();
        let mut i = lru.oldest;
        while let Some(s) = lru.slot(i) {
            up.push(s.key.to_vec());
            i = s.newer;
        }
        let mut down = Vec::new();
        let mut i = lru.newest;
        while let Some(s) = lru.slot(i) {
            down.push(s.key.to_vec());
            i = s.older;
        }
        down.reverse();
        assert_eq!(up, down, "the two directions disagree");
        assert_eq!(up.len(), lru.len());
        up
    }

    fn keys(ks: &[&str]) -> Vec<Vec<u8>> {
        ks.iter().map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut lru = Lru::new(3, 1000);
        for k in ["a", "b", "c"] {
            assert!(lru.insert(k.as_bytes(), k.to_string(), 1));
        }
        assert_eq!(order(&lru), keys(&["a", "b", "c"]));
        // Using "a" makes "b" the oldest: it is the one a fourth entry pushes out.
        assert_eq!(lru.get(b"a").map(|v| v.as_str()), Some("a"));
        assert!(lru.insert(b"d", "d".into(), 1));
        assert_eq!(order(&lru), keys(&["c", "a", "d"]));
        assert!(lru.get(b"b").is_none());
        // Replacing a key keeps one entry and makes it the newest.
        assert!(lru.insert(b"c", "c2".into(), 5));
        assert_eq!(order(&lru), keys(&["a", "d", "c"]));
        assert_eq!((lru.len(), lru.cost()), (3, 7));
        assert_eq!(lru.remove(b"a").as_deref(), Some("a"));
        assert_eq!(lru.remove(b"a"), None);
        assert_eq!(order(&lru), keys(&["d", "c"]));
        assert_eq!(lru.cost(), 6);
    }

    #[test]
    fn the_cost_budget_evicts_as_many_as_it_takes() {
        let mut lru = Lru::new(100, 10);
        for (k, cost) in [("a", 3), ("b", 3), ("c", 3)] {
            assert!(lru.insert(k.as_bytes(), (), cost));
        }
        assert_eq!(lru.cost(), 9);
        // 6 more needs 5 freed: "a" and "b" go, "c" stays.
        assert!(lru.insert(b"d", (), 6));
        assert_eq!(order(&lru), keys(&["c", "d"]));
        assert_eq!(lru.cost(), 9);
        // Above the whole budget: refused, and nothing else is evicted for it.
        assert!(!lru.insert(b"huge", (), 11));
        assert_eq!(order(&lru), keys(&["c", "d"]));
        // Exactly the budget: everything else goes.
        assert!(lru.insert(b"all", (), 10));
        assert_eq!(order(&lru), keys(&["all"]));
        // Zero entries allowed: nothing is ever kept.
        let mut off = Lru::new(0, 10);
        assert!(!off.insert(b"a", (), 0));
        assert_eq!(off.len(), 0);
    }

    /// Random operations against a plain model (a vector, oldest first): the same entries in
    /// the same order, the same cost, and slots reused rather than grown without bound.
    #[test]
    fn random_operations_match_a_model() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (max_entries, max_cost) = (8, 40);
        let mut lru = Lru::new(max_entries, max_cost);
        let mut model: Vec<(Vec<u8>, u64, u64)> = Vec::new();
        for step in 0..20_000u64 {
            let key = vec![b'k', next(20) as u8];
            match next(4) {
                0 | 1 => {
                    let cost = next(15);
                    let kept = lru.insert(&key, step, cost);
                    model.retain(|(k, _, _)| *k != key);
                    assert_eq!(kept, cost <= max_cost, "step {step}");
                    if kept {
                        while model.len() >= max_entries
                            || model.iter().map(|e| e.2).sum::<u64>() + cost > max_cost
                        {
                            model.remove(0);
                        }
                        model.push((key, step, cost));
                    }
                }
                2 => {
                    let got = lru.get(&key).copied();
                    let at = model.iter().position(|(k, _, _)| *k == key);
                    assert_eq!(got, at.map(|i| model[i].1), "step {step}");
                    if let Some(i) = at {
                        let e = model.remove(i);
                        model.push(e);
                    }
                }
                _ => {
                    let got = lru.remove(&key);
                    let at = model.iter().position(|(k, _, _)| *k == key);
                    assert_eq!(got, at.map(|i| model.remove(i).1), "step {step}");
                }
            }
            let want: Vec<Vec<u8>> = model.iter().map(|e| e.0.clone()).collect();
            assert_eq!(order(&lru), want, "step {step}");
            assert_eq!(lru.cost(), model.iter().map(|e| e.2).sum::<u64>());
            assert!(lru.cost() <= max_cost && lru.len() <= max_entries);
        }
        assert!(lru.slots.len() <= 20, "{} slots", lru.slots.len());
    }

    #[test]
    fn a_process_keeps_files_from_its_second_open_on() {
        let mut cache = FileCache::new(
            Limits {
                entries: 4,
                bytes: 1 << 20,
            },
            1024,
        );
        assert!(!cache.admits(), "the first open");
        assert!(cache.admits());
        assert!(cache.admits());
    }

    fn stamp_changed_at(secs: i64) -> Stamp {
        Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (secs, 0),
            ctime: (secs, 500),
        }
    }

    #[test]
    fn a_version_settles_once_its_change_is_older_than_the_racy_window() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let s = stamp_changed_at(1_000);
        assert!(!s.settled_at(at(1_000)));
        assert!(!s.settled_at(at(1_001)));
        assert!(!s.settled_at(at(1_002)));
        assert!(s.settled_at(at(1_003)));
        // Before the epoch or in the future: settled only when the clock is far past it.
        assert!(stamp_changed_at(-5).settled_at(at(3)));
        assert!(!stamp_changed_at(5_000).settled_at(at(1_003)));
    }

    fn open(path: &std::path::Path) -> (File, Metadata) {
        let f = File::open(path).unwrap();
        let m = f.metadata().unwrap();
        (f, m)
    }

    fn bytes(v: &Version) -> Vec<u8> {
        match &v.body {
            Body::Bytes(b) => b.to_vec(),
            Body::File(_) => panic!("not bytes: {v:?}"),
        }
    }

    #[test]
    fn small_files_are_kept_as_bytes_and_large_ones_as_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        let large = dir.path().join("large");
        std::fs::write(&small, b"hello").unwrap();
        std::fs::write(&large, vec![7u8; 100]).unwrap();
        let mut cache = FileCache::new(
            Limits {
                entries: 10,
                bytes: 1000,
            },
            50,
        );
        assert!(cache.is_on());
        let t0 = Instant::now();
        let (f, m) = open(&small);
        let v = cache.admit(b"small", f, &m, t0).unwrap();
        assert_eq!(bytes(&v), b"hello");
        assert_eq!(v.stamp, Stamp::of(&m));
        let (f, m) = open(&large);
        let v = cache.admit(b"large", f, &m, t0).unwrap();
        assert!(matches!(v.body, Body::File(_)));
        assert_eq!(cache.lru.cost(), 5 + 5 + 5);
        // Fresh for a second after the check, then asked for again.
        assert!(cache
            .fresh(b"small", t0 + Duration::from_millis(999))
            .is_some());
        assert!(cache.fresh(b"small", t0 + REVALIDATE).is_none());
        assert!(cache.fresh(b"other", t0).is_none());
        cache.forget(b"small");
        assert!(cache.fresh(b"small", t0).is_none());
        // Off: nothing is kept.
        let mut off = FileCache::new(Limits::OFF, 50);
        assert!(!off.is_on());
        let (f, m) = open(&small);
        let v = off.admit(b"small", f, &m, t0).unwrap();
        assert!(matches!(v.body, Body::File(_)));
        assert_eq!(off.lru.len(), 0);
    }

    /// A file written twice within one timestamp tick keeps its stamp; the entry, not yet
    /// settled, reads the bytes again at its next check instead of trusting the stamp.
    #[test]
    fn an_unsettled_entry_is_read_again_at_each_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let mut cache = FileCache::new(
            Limits {
                entries: 4,
                bytes: 100,
            },
            50,
        );
        let t0 = Instant::now();
        let (f, m) = open(&path);
        assert_eq!(bytes(&cache.admit(b"f", f, &m, t0).unwrap()), b"one");
        std::fs::write(&path, b"two").unwrap();
        let (f, _) = open(&path);
        // Even handed the old metadata (as a coarse clock would leave it), the bytes are new.
        let v = cache.admit(b"f", f, &m, t0 + REVALIDATE).unwrap();
        assert_eq!(bytes(&v), b"two");
    }

    /// A deploy that deletes a large file must not leave it open in every worker: entries
    /// nobody asks for go at the next open after [`IDLE`], descriptor and all.
    #[test]
    fn entries_idle_for_a_while_are_dropped_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        for n in ["a", "b", "c"] {
            std::fs::write(path(n), vec![b'x'; 100]).unwrap();
        }
        let limits = Limits {
            entries: 4,
            bytes: 1000,
        };
        // Files over 50 bytes are kept as descriptors.
        let mut cache = FileCache::new(limits, 50);
        let t0 = Instant::now();
        let (f, m) = open(&path("a"));
        cache.admit(b"a", f, &m, t0).unwrap();
        std::fs::remove_file(path("a")).unwrap();
        let (f, m) = open(&path("b"));
        cache.admit(b"b", f, &m, t0 + IDLE / 2).unwrap();
        assert_eq!(cache.lru.len(), 2, "nothing idle for long yet");
        // b's check, a second after it went stale: a, unused since t0, is closed.
        let (f, m) = open(&path("b"));
        cache.admit(b"b", f, &m, t0 + IDLE).unwrap();
        assert_eq!(cache.lru.len(), 1, "the deleted file, idle, is still open");
        assert!(cache.lru.get(b"b").is_some());
        // Much later, another file: b, unused for IDLE, goes.
        let (f, m) = open(&path("c"));
        cache.admit(b"c", f, &m, t0 + IDLE * 2).unwrap();
        assert_eq!(cache.lru.len(), 1);
        assert!(cache.lru.get(b"c").is_some());
    }

    #[test]
    fn entries_are_held_to_the_descriptor_budget() {
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let cache = FileCache::new(
            Limits {
                entries: usize::MAX,
                bytes: 0,
            },
            0,
        );
        assert_eq!(
            cache.lru.max_entries as u64,
            soft.saturating_sub(FD_RESERVE) / 2
        );
    }
}
