//! A bulk load's trie writes, made on a thread of their own: the RIB's
//! thread queues routes ([`TrieBatch`]) and hands each full batch over a
//! short bounded channel, so the kernel's trie insert (about half of a
//! cold start's RIB time at 1M routes) overlaps the next batch's decoding
//! and indexing instead of following it.
//!
//! Only while no program reads the maps ([`crate::dataplane::map_writer::MapWriter::begin_bulk`]):
//! a batch lands some time after the RIB wrote the index entries that name
//! the same routes. [`TrieWriter::sync`] waits until every batch handed
//! over is written; a delete, a route written one by one and the load's
//! end come after one.

use crate::dataplane::{
    map_error::{access, MapError},
    trie_batch::{TrieBatch, Written},
};
use aya::maps::{lpm_trie::Key, IterableMap, LpmTrie, Map, MapData};
use common::{
    maps,
    route::{V4KeyData, V6KeyData},
    RouteEntry,
};
use ipnet::IpNet;
use std::{os::fd::AsFd, sync::mpsc, thread::JoinHandle};

/// Batches handed over and not yet written, at most: the RIB's thread
/// waits beyond it rather than queue the whole table in memory.
const IN_FLIGHT: usize = 4;

/// The trie writes of bulk loads, as `show stats` reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrieWriteStats {
    /// Batch calls made (`BPF_MAP_UPDATE_BATCH`).
    pub batches: u64,
    /// Routes the batch calls wrote.
    pub batched: u64,
    /// Routes written one by one after a batch call stopped short.
    pub retried: u64,
}

impl TrieWriteStats {
    pub fn merge(&mut self, other: TrieWriteStats) {
        self.batches += other.batches;
        self.batched += other.batched;
        self.retried += other.retried;
    }

    fn add(&mut self, w: &Written) {
        self.batches += 1;
        self.batched += w.batched as u64;
        self.retried += w.retried as u64;
    }
}

enum Job {
    V4(TrieBatch<V4KeyData>),
    V6(TrieBatch<V6KeyData>),
    /// Answered once every batch handed over before it is written.
    Sync(mpsc::SyncSender<Synced>),
}

/// What the writer did since the last sync.
#[derive(Default)]
struct Synced {
    stats: TrieWriteStats,
    /// The first route the kernel refused.
    refused: Option<MapError>,
}

/// The writer thread and the batches being filled for it.
pub struct TrieWriter {
    jobs: Option<mpsc::SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    v4: TrieBatch<V4KeyData>,
    v6: TrieBatch<V6KeyData>,
    /// Batches handed over since the last sync.
    unsynced: bool,
    stats: TrieWriteStats,
    refused: Option<MapError>,
    /// Fault injection: the next batch handed over is refused by the
    /// kernel (and then written one by one).
    refuse_next: bool,
}

/// A second view of `trie`, on a descriptor of its own, for the thread.
fn reopen<K: aya::Pod>(trie: &LpmTrie<MapData, K, RouteEntry>, name: &'static str) -> Result<LpmTrie<MapData, K, RouteEntry>, MapError> {
    let fd = trie.map().fd().as_fd().try_clone_to_owned().map_err(|error| MapError::Os {
        map: name,
        what: format!("duplicating {name}'s descriptor for the trie writer"),
        error,
    })?;
    let data = access(MapData::from_fd(fd), name, || format!("reopening {name} for the trie writer"))?;
    access(LpmTrie::try_from(Map::LpmTrie(data)), name, || format!("{name} is not an LPM trie"))
}

impl TrieWriter {
    /// Starts the thread, with its own views of the two tries.
    pub fn spawn(
        v4: &LpmTrie<MapData, V4KeyData, RouteEntry>,
        v6: &LpmTrie<MapData, V6KeyData, RouteEntry>,
    ) -> Result<TrieWriter, MapError> {
        let tries = (reopen(v4, maps::ROUTES_V4)?, reopen(v6, maps::ROUTES_V6)?);
        let (jobs, queue) = mpsc::sync_channel(IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("trie-writer".into())
            .spawn(move || run(tries, queue))
            .map_err(|error| MapError::Os { map: maps::ROUTES_V4, what: "starting the trie writer thread".into(), error })?;
        Ok(TrieWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            v4: TrieBatch::default(),
            v6: TrieBatch::default(),
            unsynced: false,
            stats: TrieWriteStats::default(),
            refused: None,
            refuse_next: false,
        })
    }

    /// Makes the next batch handed over fail its batch call (the test of
    /// the one-by-one path).
    pub fn refuse_next_batch(&mut self) {
        self.refuse_next = true;
    }

    pub fn push_v4(&mut self, prefix: IpNet, key: Key<V4KeyData>, entry: RouteEntry) {
        self.v4.push(prefix, key, entry);
        if self.v4.is_full() {
            self.hand_over_v4();
        }
    }

    pub fn push_v6(&mut self, prefix: IpNet, key: Key<V6KeyData>, entry: RouteEntry) {
        self.v6.push(prefix, key, entry);
        if self.v6.is_full() {
            self.hand_over_v6();
        }
    }

    fn hand_over_v4(&mut self) {
        let batch = self.take_batch(|w| &mut w.v4);
        self.send(Job::V4(batch));
    }

    fn hand_over_v6(&mut self) {
        let batch = self.take_batch(|w| &mut w.v6);
        self.send(Job::V6(batch));
    }

    /// The batch being filled, replaced by an empty one; the refusal a
    /// fault injection asked for goes with it.
    fn take_batch<K: aya::Pod>(&mut self, batch: impl FnOnce(&mut Self) -> &mut TrieBatch<K>) -> TrieBatch<K> {
        let refuse = std::mem::take(&mut self.refuse_next);
        let mut taken = std::mem::take(batch(self));
        if refuse {
            taken.refuse();
        }
        taken
    }

    fn send(&mut self, job: Job) {
        self.unsynced = true;
        // The thread ends only when `jobs` is dropped, or by a panic (an
        // abort, in this build): a send cannot find it gone.
        self.jobs.as_ref().expect("trie writer running").send(job).expect("trie writer thread alive");
    }

    /// Hands over the partial batches and waits until every route queued
    /// so far is in its trie (at once when nothing is queued).
    pub fn sync(&mut self) {
        if !self.v4.is_empty() {
            self.hand_over_v4();
        }
        if !self.v6.is_empty() {
            self.hand_over_v6();
        }
        if !std::mem::take(&mut self.unsynced) {
            return;
        }
        let (ack, synced) = mpsc::sync_channel(1);
        self.jobs.as_ref().expect("trie writer running").send(Job::Sync(ack)).expect("trie writer thread alive");
        let Synced { stats, refused } = synced.recv().expect("trie writer answers a sync");
        self.stats.merge(stats);
        if self.refused.is_none() {
            self.refused = refused;
        }
    }

    /// Syncs, ends the thread, and gives what it wrote and the first route
    /// the kernel refused, if any.
    pub fn finish(mut self) -> (TrieWriteStats, Option<MapError>) {
        self.sync();
        self.stop();
        (self.stats, self.refused.take())
    }

    /// Ends the thread once it has written what was handed over (a partial
    /// batch not handed over is dropped: only a failed load drops a writer
    /// unfinished).
    fn stop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TrieWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer thread: batches in the order handed over (so a later write
/// of a prefix wins), until the channel closes.
fn run((mut v4, mut v6): (LpmTrie<MapData, V4KeyData, RouteEntry>, LpmTrie<MapData, V6KeyData, RouteEntry>), jobs: mpsc::Receiver<Job>) {
    let mut synced = Synced::default();
    let mut warned = false;
    for job in jobs {
        let written = match job {
            Job::V4(batch) => batch.write(&mut v4, maps::ROUTES_V4),
            Job::V6(batch) => batch.write(&mut v6, maps::ROUTES_V6),
            Job::Sync(ack) => {
                let _ = ack.send(std::mem::take(&mut synced));
                continue;
            }
        };
        if written.retried > 0 && !std::mem::replace(&mut warned, true) {
            // Once: a kernel refusing every batch halves the load's speed.
            tracing::warn!("a batch call of trie writes stopped short; its routes were written one by one (show stats counts them)");
        }
        synced.stats.add(&written);
        if synced.refused.is_none() {
            synced.refused = written.refused;
        }
    }
}
