//! The tries' queued writes, made on a thread of their own: the RIB's
//! thread queues routes ([`TrieBatch`]) and hands each full batch over a
//! short bounded channel, so the kernel's trie insert (about half of the
//! RIB's time per route) overlaps the next batch's decoding and indexing
//! instead of following it.
//!
//! A batch lands some time after the RIB wrote the index entries and slots
//! that name the same routes; when that lag is allowed is the queue's
//! business ([`crate::dataplane::trie_queue`]). [`TrieWriter::sync`] waits
//! until every batch handed over is written.

use crate::dataplane::{
    map_error::{access, MapError},
    trie_batch::{Refuse, Refused, TrieBatch, Written},
};
use aya::maps::{lpm_trie::Key, IterableMap, LpmTrie, Map, MapData};
use common::{
    maps,
    route::{V4KeyData, V6KeyData},
    RouteEntry,
};
use ipnet::IpNet;
use std::{collections::HashMap, os::fd::AsFd, sync::mpsc, thread::JoinHandle};

/// Batches waiting in the channel, at most: the RIB's thread waits beyond
/// it rather than queue the whole table in memory. A writer that lags
/// takes up to as many again at once ([`gather`]) and writes them in prefix
/// order ([`TrieBatch::into_prefix_order`]): the more it lags, the cheaper
/// each insert. So at most 2 × 8 batches and a partial one are ahead of a
/// write queued now (about 50 ms at 3 µs an insert: `trie_queue` counts on it).
const IN_FLIGHT: usize = 8;

/// The queued trie writes (cold start and turns), as `show stats` reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrieWriteStats {
    /// Batch calls made (`BPF_MAP_UPDATE_BATCH`).
    pub batches: u64,
    /// Routes the batch calls wrote.
    pub batched: u64,
    /// Routes written one by one after a batch call stopped short.
    pub retried: u64,
    /// Routes the kernel refused one by one too.
    #[serde(default)]
    pub refused: u64,
    /// Of those, refused while a program read the maps and not written
    /// yet: out of their trie (the index and a covering route answer) and
    /// retried every second.
    #[serde(default)]
    pub owed: u64,
}

impl TrieWriteStats {
    /// Adds `other`'s counts (`owed` is a level, set by its owner).
    pub fn merge(&mut self, other: TrieWriteStats) {
        self.batches += other.batches;
        self.batched += other.batched;
        self.retried += other.retried;
        self.refused += other.refused;
    }

    fn add(&mut self, w: &Written) {
        self.batches += 1;
        self.batched += w.batched as u64;
        self.retried += w.retried as u64;
        self.refused += w.refused.len() as u64;
    }
}

enum Job {
    V4(TrieBatch<V4KeyData>),
    V6(TrieBatch<V6KeyData>),
    /// Answered once every batch handed over before it is written.
    Sync(mpsc::SyncSender<Synced>),
}

/// What the writer did since the last sync.
#[derive(Debug, Default)]
pub struct Synced {
    pub stats: TrieWriteStats,
    /// The routes the kernel refused, by prefix, each prefix's last write:
    /// one a later write of the same prefix landed after is not among them.
    pub refused: Vec<Refused>,
}

/// One family's batch of a writer.
type Family<K> = fn(&mut TrieWriter) -> &mut TrieBatch<K>;

/// The writer thread and the batches being filled for it.
pub struct TrieWriter {
    jobs: Option<mpsc::SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    v4: TrieBatch<V4KeyData>,
    v6: TrieBatch<V6KeyData>,
    /// Batches handed over since the last sync.
    unsynced: bool,
    /// Fault injection: what of the next batch handed over the kernel
    /// is made to refuse.
    refuse_next: Option<Refuse>,
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
            refuse_next: None,
        })
    }

    /// Makes the kernel refuse `what` of the next batch handed over.
    pub fn refuse_next_batch(&mut self, what: Refuse) {
        self.refuse_next = Some(what);
    }

    pub fn push_v4(&mut self, prefix: IpNet, key: Key<V4KeyData>, entry: RouteEntry) {
        self.push(|w| &mut w.v4, Job::V4, prefix, key, entry);
    }

    pub fn push_v6(&mut self, prefix: IpNet, key: Key<V6KeyData>, entry: RouteEntry) {
        self.push(|w| &mut w.v6, Job::V6, prefix, key, entry);
    }

    /// Queues a route in the family's batch (`batch`), handed over as
    /// `job` once full.
    fn push<K: aya::Pod>(&mut self, batch: Family<K>, job: fn(TrieBatch<K>) -> Job, prefix: IpNet, key: Key<K>, entry: RouteEntry) {
        batch(self).push(prefix, key, entry);
        if batch(self).is_full() {
            self.hand_over_batch(batch, job, prefix.addr().is_ipv4());
        }
    }

    /// Hands over the family's batch, replaced by an empty one; the
    /// refusal a fault injection asked for goes with it when it is the
    /// IPv4 one (`ipv4`): an IPv6 write racing the test's (a neighbour's
    /// host route) must not take it.
    fn hand_over_batch<K: aya::Pod>(&mut self, batch: Family<K>, job: fn(TrieBatch<K>) -> Job, ipv4: bool) {
        let refuse = if ipv4 { self.refuse_next.take() } else { None };
        let mut taken = std::mem::take(batch(self));
        if let Some(what) = refuse {
            taken.refuse(what);
        }
        self.send(job(taken));
    }

    fn send(&mut self, job: Job) {
        self.unsynced = true;
        // The thread ends only when `jobs` is dropped, or by a panic (an
        // abort, in this build): a send cannot find it gone.
        self.jobs.as_ref().expect("trie writer running").send(job).expect("trie writer thread alive");
    }

    /// Hands over the partial batches, not waiting for them.
    pub fn hand_over(&mut self) {
        if !self.v4.is_empty() {
            self.hand_over_batch(|w| &mut w.v4, Job::V4, true);
        }
        if !self.v6.is_empty() {
            self.hand_over_batch(|w| &mut w.v6, Job::V6, false);
        }
    }

    /// Hands over the partial batches and waits until every route queued
    /// so far is in its trie (at once when nothing is queued); returns what
    /// the writes did since the last sync.
    pub fn sync(&mut self) -> Synced {
        self.hand_over();
        if !std::mem::take(&mut self.unsynced) {
            return Synced::default();
        }
        let (ack, synced) = mpsc::sync_channel(1);
        self.jobs.as_ref().expect("trie writer running").send(Job::Sync(ack)).expect("trie writer thread alive");
        synced.recv().expect("trie writer answers a sync")
    }

    /// Ends the thread once it has written what was handed over (a partial
    /// batch not handed over is dropped: its owner syncs before it drops
    /// the writer, but on an error that ends the agent).
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

/// Refusals since the last sync, by prefix, the superseded dropped.
#[derive(Default)]
struct Refusals(HashMap<IpNet, Refused>);

impl Refusals {
    /// Follows `written` of a batch of `prefixes`, in order: a refused
    /// write is kept, one a later write of its prefix landed after is not.
    fn follow(&mut self, prefixes: &[IpNet], written: Vec<Refused>) {
        if self.0.is_empty() && written.is_empty() {
            return;
        }
        let mut refused = written.into_iter().peekable();
        for (i, prefix) in prefixes.iter().enumerate() {
            match refused.next_if(|r| r.index == i) {
                Some(r) => self.0.insert(*prefix, r),
                None => self.0.remove(prefix),
            };
        }
    }
}

/// The batches of one family queued behind `first`, taken into it (up to
/// [`IN_FLIGHT`] in all, or the first job of another kind, returned; a
/// refused batch goes alone).
fn gather<K: aya::Pod>(
    mut first: TrieBatch<K>,
    jobs: &mpsc::Receiver<Job>,
    take: fn(Job) -> Result<TrieBatch<K>, Job>,
    wrap: fn(TrieBatch<K>) -> Job,
) -> (TrieBatch<K>, Option<Job>) {
    if first.is_refused() {
        return (first, None);
    }
    for _ in 1..IN_FLIGHT {
        let Ok(job) = jobs.try_recv() else { break };
        match take(job) {
            Ok(batch) if !batch.is_refused() => first.absorb(batch),
            Ok(batch) => return (first, Some(wrap(batch))),
            Err(other) => return (first, Some(other)),
        }
    }
    (first, None)
}

/// What the writer thread keeps between jobs.
#[derive(Default)]
struct Writes {
    stats: TrieWriteStats,
    refusals: Refusals,
    warned: bool,
}

impl Writes {
    /// Writes `batch` into `trie`, in prefix order unless it carries a
    /// fault injection (written as handed over).
    fn write<K: aya::Pod>(&mut self, batch: TrieBatch<K>, trie: &mut LpmTrie<MapData, K, RouteEntry>, map: &'static str) {
        let batches = if batch.is_refused() { vec![batch] } else { batch.into_prefix_order() };
        for batch in batches {
            let mut written = batch.write(trie, map);
            if written.retried > 0 && !std::mem::replace(&mut self.warned, true) {
                // Once: a kernel refusing every batch halves the writes' speed.
                tracing::warn!("a batch call of trie writes stopped short; its routes were written one by one (show stats counts them)");
            }
            self.stats.add(&written);
            self.refusals.follow(&batch.into_prefixes(), std::mem::take(&mut written.refused));
        }
    }
}

/// The writer thread: batches in the order handed over (so a later write
/// of a prefix wins; the batches queued together are written together, in
/// prefix order, which keeps that), until the channel closes.
fn run((mut v4, mut v6): (LpmTrie<MapData, V4KeyData, RouteEntry>, LpmTrie<MapData, V6KeyData, RouteEntry>), jobs: mpsc::Receiver<Job>) {
    let mut w = Writes::default();
    let mut next = None;
    loop {
        let Some(job) = next.take().or_else(|| jobs.recv().ok()) else { break };
        match job {
            Job::V4(batch) => {
                let (batch, after) = gather(batch, &jobs, |j| if let Job::V4(b) = j { Ok(b) } else { Err(j) }, Job::V4);
                next = after;
                w.write(batch, &mut v4, maps::ROUTES_V4);
            }
            Job::V6(batch) => {
                let (batch, after) = gather(batch, &jobs, |j| if let Job::V6(b) = j { Ok(b) } else { Err(j) }, Job::V6);
                next = after;
                w.write(batch, &mut v6, maps::ROUTES_V6);
            }
            Job::Sync(ack) => {
                let mut refused: Vec<Refused> = std::mem::take(&mut w.refusals).0.into_values().collect();
                refused.sort_unstable_by_key(|r| r.prefix);
                let _ = ack.send(Synced { stats: std::mem::take(&mut w.stats), refused });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(index: usize, prefix: &str) -> Refused {
        Refused {
            index,
            prefix: prefix.parse().unwrap(),
            entry: RouteEntry::new(common::route::RouteKind::Blackhole, 0, common::MetricsRef::DEFAULT, 0),
            error: MapError::Full { map: "ROUTES_V4", capacity: 1 },
        }
    }

    fn kept(r: &Refusals) -> Vec<(String, usize)> {
        let mut v: Vec<_> = r.0.iter().map(|(p, r)| (p.to_string(), r.index)).collect();
        v.sort();
        v
    }

    #[test]
    fn a_refusal_is_kept_until_a_later_write_of_its_prefix_lands() {
        let p = |s: &str| -> IpNet { s.parse().unwrap() };
        let mut r = Refusals::default();
        // Batch 1: a, b, a; the first a and b refused, the second a landed.
        r.follow(&[p("10.0.0.0/8"), p("11.0.0.0/8"), p("10.0.0.0/8")], vec![refused(0, "10.0.0.0/8"), refused(1, "11.0.0.0/8")]);
        assert_eq!(kept(&r), vec![("11.0.0.0/8".into(), 1)], "a's later write landed: only b is owed");
        // Batch 2: c landed, then b refused again (its newer write).
        r.follow(&[p("12.0.0.0/8"), p("11.0.0.0/8")], vec![refused(1, "11.0.0.0/8")]);
        assert_eq!(kept(&r), vec![("11.0.0.0/8".into(), 1)]);
        // Batch 3: b landed.
        r.follow(&[p("11.0.0.0/8")], vec![]);
        assert!(kept(&r).is_empty());
        // Nothing refused, nothing kept: the common case does no work.
        r.follow(&[p("13.0.0.0/8")], vec![]);
        assert!(kept(&r).is_empty());
    }
}
