//! When a route's trie write is queued for the writer thread
//! ([`crate::dataplane::trie_writer`]) instead of made at once, and what
//! becomes of a route the kernel refuses.
//!
//! - **A bulk load** (a cold start: nothing reads the maps yet): every
//!   write is queued; a route refused fails the load.
//! - **Turns** (a netlink batch of [`TURN_QUEUES_FROM`] changes or more,
//!   an FPM turn; a program reads the maps), only with a grace period of
//!   [`TURN_QUEUES_WITH_GRACE`] or more. The writes of one turn, and of
//!   the turns that follow it, may land after the turn: the RIB goes on
//!   with the next one meanwhile. Until its batch lands, a trie entry may
//!   still name a route's old slots, which the RIB freed when it queued the
//!   write; a freed slot is reused only after the grace period. The rule
//!   that keeps those intact: no write stays queued for more than a
//!   quarter of it (checked at each write the RIB makes in a turn, and as
//!   turns begin and end) before the RIB waits for it, and what may be
//!   queued ahead of it takes at most [`crate::dataplane::trie_writer`]'s
//!   drain time (17 batches, about 50 ms at 3 µs an insert) to land, so
//!   an entry lands within half the grace period of the slots it replaces
//!   being freed; and anything else that writes through the RIB
//!   (a control request, the tick, a slow-path report) and every delete
//!   waits for the queued writes first. A reader sees the old route or the
//!   new one. (The policy maps hold rules, which no entry names.)
//!
//!   A route the kernel refuses has its stale entry taken out of the trie
//!   (the index, written already, or a covering route answers) and is
//!   owed: written again each second until it lands, forgotten once its
//!   prefix is written or deleted again.
//! - Otherwise, and for a trie near its size (so that a full one refuses
//!   the very route it cannot take, to the caller), the write is made at
//!   once.

use crate::dataplane::{
    map_error::{absent_is_fine, MapError},
    trie_batch::{route_map, v4_key, v6_key, Refuse, Refused},
    trie_writer::{Synced, TrieWriteStats, TrieWriter},
};
use aya::maps::{LpmTrie, MapData};
use common::{
    route::{V4KeyData, V6KeyData},
    RouteEntry,
};
use ipnet::IpNet;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// The two tries, as the queue writes them directly.
pub struct Tries<'a> {
    pub v4: &'a mut LpmTrie<MapData, V4KeyData, RouteEntry>,
    pub v6: &'a mut LpmTrie<MapData, V6KeyData, RouteEntry>,
}

impl Tries<'_> {
    pub fn insert(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<(), aya::maps::MapError> {
        match prefix {
            IpNet::V4(p) => self.v4.insert(&v4_key(p), entry, 0),
            IpNet::V6(p) => self.v6.insert(&v6_key(p), entry, 0),
        }
    }

    /// Removes `prefix`; one not there is removed all the same.
    pub fn remove(&mut self, prefix: &IpNet) -> Result<(), aya::maps::MapError> {
        absent_is_fine(match prefix {
            IpNet::V4(p) => self.v4.remove(&v4_key(p)),
            IpNet::V6(p) => self.v6.remove(&v6_key(p)),
        })
    }
}

/// Changes in a turn from which its route writes are queued: a thread's
/// wake costs more than a few writes.
const TURN_QUEUES_FROM: usize = 64;

/// The grace period from which turns queue: a quarter of it is the most
/// a write may wait before the RIB waits for it, and another quarter is
/// above the writer's longest drain (17 batches, about 50 ms here).
pub const TURN_QUEUES_WITH_GRACE: Duration = Duration::from_millis(200);

/// Refused routes a settle names in the log (the rest it counts).
const LOGGED_REFUSALS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Bulk,
    Turn,
    /// Between turns, writes in flight: a write outside a turn waits.
    Lagging,
}

/// Fault injection for the paths after a refusal: what the kernel is made
/// to refuse of the first batch of the next bulk load, or of the next turn.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrieFaults {
    pub bulk: Option<Refuse>,
    pub turn: Option<Refuse>,
}

pub struct TrieQueue {
    /// Started with the first load or turn that queues, then kept.
    writer: Option<TrieWriter>,
    /// The writer could not be started: every write is made at once.
    no_writer: bool,
    mode: Mode,
    /// The grace period freed slots wait out; turns queue only with one.
    grace: Duration,
    /// When the oldest write not waited for was queued.
    unsynced_since: Option<Instant>,
    /// Refused in a turn, not written yet: prefix -> the entry it is owed.
    owed: HashMap<IpNet, RouteEntry>,
    /// A route a bulk load's writes had refused.
    bulk_refused: Option<MapError>,
    stats: TrieWriteStats,
    faults: TrieFaults,
}

impl TrieQueue {
    pub fn new(grace: Duration) -> TrieQueue {
        TrieQueue {
            writer: None,
            no_writer: false,
            mode: Mode::Direct,
            grace,
            unsynced_since: None,
            owed: HashMap::new(),
            bulk_refused: None,
            stats: TrieWriteStats::default(),
            faults: TrieFaults::default(),
        }
    }

    /// Turns queue only with a grace period of [`TURN_QUEUES_WITH_GRACE`]
    /// or more.
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    pub fn arm_faults(&mut self, faults: TrieFaults) {
        self.faults = faults;
    }

    pub fn stats(&self) -> TrieWriteStats {
        TrieWriteStats { owed: self.owed.len() as u64, ..self.stats }
    }

    /// Queues from here on (`mode`), when a writer runs or can be started.
    fn begin(&mut self, mode: Mode, fault: Option<Refuse>, tries: &Tries) {
        if self.writer.is_none() && !self.no_writer {
            match TrieWriter::spawn(tries.v4, tries.v6) {
                Ok(w) => self.writer = Some(w),
                Err(e) => {
                    tracing::warn!("no trie writer thread ({e}): routes are written one by one");
                    self.no_writer = true;
                }
            }
        }
        if let Some(writer) = self.writer.as_mut() {
            if let Some(what) = fault {
                writer.refuse_next_batch(what);
            }
            self.mode = mode;
        }
    }

    pub fn begin_bulk(&mut self, tries: &Tries) {
        debug_assert_eq!(self.mode, Mode::Direct, "a bulk load begins outside any turn");
        let fault = self.faults.bulk.take();
        self.begin(Mode::Bulk, fault, tries);
    }

    /// Every queued write made, or a route the kernel refused (the load
    /// fails with it).
    pub fn end_bulk(&mut self, tries: &mut Tries) -> Result<(), MapError> {
        self.settle(tries);
        self.mode = Mode::Direct;
        self.bulk_refused.take().map_or(Ok(()), Err)
    }

    /// A turn of `changes` begins: its route writes are queued. A small
    /// turn with nothing in flight writes at once.
    pub fn begin_turn(&mut self, changes: usize, tries: &mut Tries) {
        // An armed fault makes the turn queue, whatever its size.
        let small = changes < TURN_QUEUES_FROM && self.faults.turn.is_none();
        if self.grace < TURN_QUEUES_WITH_GRACE || self.mode == Mode::Bulk || (self.mode == Mode::Direct && small) {
            return;
        }
        self.bound_age(tries);
        if self.mode == Mode::Direct {
            self.begin(Mode::Turn, None, tries);
        } else {
            self.mode = Mode::Turn;
        }
    }

    /// A turn ends: its partial batches are handed over, not waited for
    /// (unless the oldest write is old enough).
    pub fn end_turn(&mut self, tries: &mut Tries) {
        if self.mode != Mode::Turn {
            return;
        }
        self.writer.as_mut().expect("a queueing mode has a writer").hand_over();
        self.bound_age(tries);
        self.mode = if self.unsynced_since.is_some() { Mode::Lagging } else { Mode::Direct };
    }

    /// Waits for the queued writes if the oldest has waited a quarter of
    /// the grace period.
    fn bound_age(&mut self, tries: &mut Tries) {
        if self.unsynced_since.is_some_and(|t| t.elapsed() >= self.grace / 4) {
            self.settle(tries);
        }
    }

    fn forget_owed(&mut self, prefix: &IpNet) -> bool {
        !self.owed.is_empty() && self.owed.remove(prefix).is_some()
    }

    /// Before any other write: outside a turn the queued writes are waited
    /// for; within one, those waiting too long.
    pub fn settle_lagging(&mut self, tries: &mut Tries) {
        match self.mode {
            Mode::Lagging => {
                self.settle(tries);
                self.mode = Mode::Direct;
            }
            Mode::Turn => self.bound_age(tries),
            Mode::Direct | Mode::Bulk => {}
        }
    }

    /// On the way out: whatever is queued written, the owed routes tried
    /// once more.
    pub fn finish(&mut self, tries: &mut Tries) {
        if self.mode != Mode::Direct {
            self.settle(tries);
            self.mode = Mode::Direct;
        }
        self.retry_owed(tries);
        if !self.owed.is_empty() {
            tracing::error!(owed = self.owed.len(), "routes refused by their tries are left out of them");
        }
    }

    /// Each second, outside any turn: the queued writes waited for, then
    /// the owed routes written again.
    pub fn retry_owed(&mut self, tries: &mut Tries) {
        self.settle_lagging(tries);
        if self.mode == Mode::Direct {
            self.owed.retain(|prefix, entry| tries.insert(prefix, entry).is_err());
        }
    }

    /// Queues `prefix`'s write (true), or leaves it to the caller to make at
    /// once (false): outside a load or turn, or with no `room` sure in the
    /// trie, after the writes queued before it.
    pub fn queue(&mut self, prefix: &IpNet, entry: &RouteEntry, room: bool, tries: &mut Tries) -> bool {
        // Each settle may owe `prefix` an earlier write: forgotten after it.
        self.settle_lagging(tries);
        if self.mode == Mode::Direct || !room {
            if self.mode != Mode::Direct {
                self.settle(tries);
            }
            self.forget_owed(prefix);
            return false;
        }
        self.forget_owed(prefix);
        let writer = self.writer.as_mut().expect("a queueing mode has a writer");
        if self.mode == Mode::Turn {
            if let Some(what) = self.faults.turn.take() {
                writer.refuse_next_batch(what);
            }
        }
        match prefix {
            IpNet::V4(p) => writer.push_v4(*prefix, v4_key(p), *entry),
            IpNet::V6(p) => writer.push_v6(*prefix, v6_key(p), *entry),
        }
        if self.mode == Mode::Turn && self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        true
    }

    /// Before `prefix` is deleted from its trie: no queued write of it may
    /// land after, and it is owed nothing.
    pub fn before_delete(&mut self, prefix: &IpNet, tries: &mut Tries) {
        if self.mode != Mode::Direct {
            self.settle(tries);
        }
        if self.mode == Mode::Lagging {
            self.mode = Mode::Direct;
        }
        self.forget_owed(prefix);
    }

    /// Waits for the writes queued so far, and deals with the refused.
    fn settle(&mut self, tries: &mut Tries) {
        let Some(writer) = self.writer.as_mut() else { return };
        let Synced { stats, refused } = writer.sync();
        self.unsynced_since = None;
        self.stats.merge(stats);
        let refusals = refused.len();
        for (n, Refused { prefix, entry, error, .. }) in refused.into_iter().enumerate() {
            if self.mode == Mode::Bulk {
                // The load fails with one of them.
                self.bulk_refused.get_or_insert(error);
                continue;
            }
            // A few named, the rest counted (a refused batch is 1,024).
            if n < LOGGED_REFUSALS {
                let map = route_map(&prefix);
                tracing::error!(%prefix, error = %crate::error_chain(&error), "{map} refused the route; out of the trie, retried every second");
            }
            if let Err(e) = tries.remove(&prefix) {
                tracing::error!(%prefix, error = %e, "removing the stale trie entry of a refused route");
            }
            // No later write of the prefix landed since (the writer drops a
            // refusal superseded): this is the entry it is owed.
            self.owed.insert(prefix, entry);
        }
        if self.mode != Mode::Bulk && refusals > LOGGED_REFUSALS {
            tracing::error!(
                "{} more routes refused; out of their tries, retried every second (show stats counts them)",
                refusals - LOGGED_REFUSALS
            );
        }
    }
}
