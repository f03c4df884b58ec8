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
    map_error::MapError,
    trie_batch::{TrieBatch, Written},
};
use aya::maps::{lpm_trie::Key, IterableMap, LpmTrie, MapData};
use common::{
    maps,
    route::{V4KeyData, V6KeyData},
    RouteEntry,
};
use ipnet::IpNet;
use std::{
    os::fd::{AsFd, OwnedFd},
    sync::mpsc,
    thread::JoinHandle,
};

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
    stats: TrieWriteStats,
    refused: Option<MapError>,
    /// Fault injection: the next batch handed over is refused by the
    /// kernel (and then written one by one).
    refuse_next: bool,
}

impl TrieWriter {
    /// Starts the thread, with its own descriptors of the two tries.
    pub fn spawn(
        v4: &LpmTrie<MapData, V4KeyData, RouteEntry>,
        v6: &LpmTrie<MapData, V6KeyData, RouteEntry>,
    ) -> std::io::Result<TrieWriter> {
        let fds = (v4.map().fd().as_fd().try_clone_to_owned()?, v6.map().fd().as_fd().try_clone_to_owned()?);
        let (jobs, queue) = mpsc::sync_channel(IN_FLIGHT);
        let thread = std::thread::Builder::new().name("trie-writer".into()).spawn(move || run(fds, queue))?;
        Ok(TrieWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            v4: TrieBatch::default(),
            v6: TrieBatch::default(),
            stats: TrieWriteStats::default(),
            refused: None,
            refuse_next: false,
        })
    }

    /// Makes the next batch handed over fail its batch call (the test of
    /// the one-by-one retry).
    pub fn refuse_next_batch(&mut self) {
        self.refuse_next = true;
    }

    pub fn push_v4(&mut self, prefix: IpNet, key: Key<V4KeyData>, entry: RouteEntry) {
        self.v4.push(prefix, key, entry);
        if self.v4.is_full() {
            let batch = self.take(|w| &mut w.v4);
            self.send(Job::V4(batch));
        }
    }

    pub fn push_v6(&mut self, prefix: IpNet, key: Key<V6KeyData>, entry: RouteEntry) {
        self.v6.push(prefix, key, entry);
        if self.v6.is_full() {
            let batch = self.take(|w| &mut w.v6);
            self.send(Job::V6(batch));
        }
    }

    fn take<K: aya::Pod>(&mut self, batch: impl FnOnce(&mut Self) -> &mut TrieBatch<K>) -> TrieBatch<K> {
        let refuse = std::mem::take(&mut self.refuse_next);
        let mut taken = std::mem::take(batch(self));
        taken.refuse_batch = refuse;
        taken
    }

    fn send(&mut self, job: Job) {
        // The thread ends only when `jobs` is dropped, or by a panic (an
        // abort, in this build): a send cannot find it gone.
        self.jobs.as_ref().expect("trie writer running").send(job).expect("trie writer thread alive");
    }

    /// Hands over the partial batches and waits until every route queued
    /// so far is in its trie.
    pub fn sync(&mut self) {
        if !self.v4.is_empty() {
            let batch = self.take(|w| &mut w.v4);
            self.send(Job::V4(batch));
        }
        if !self.v6.is_empty() {
            let batch = self.take(|w| &mut w.v6);
            self.send(Job::V6(batch));
        }
        let (ack, synced) = mpsc::sync_channel(1);
        self.send(Job::Sync(ack));
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
fn run((v4, v6): (OwnedFd, OwnedFd), jobs: mpsc::Receiver<Job>) {
    let mut synced = Synced { stats: TrieWriteStats::default(), refused: None };
    for job in jobs {
        let written = match job {
            Job::V4(batch) => batch.write(v4.as_fd(), maps::ROUTES_V4),
            Job::V6(batch) => batch.write(v6.as_fd(), maps::ROUTES_V6),
            Job::Sync(ack) => {
                let _ = ack.send(std::mem::replace(&mut synced, Synced { stats: TrieWriteStats::default(), refused: None }));
                continue;
            }
        };
        synced.stats.add(&written);
        if synced.refused.is_none() {
            synced.refused = written.refused;
        }
    }
}
