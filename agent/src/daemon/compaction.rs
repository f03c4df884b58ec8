//! The agent's tables after a bulk load. A cold start's dump and zebra's
//! replay both come in prefix order, and a B-tree filled in key order
//! splits each node as it fills and leaves it half full: about a quarter
//! more memory a route than the same table inserted at random, a third
//! more than full nodes. Once the routes have settled (fewer than [`BUSY`]
//! changes in a tick), and the table has grown or shrunk by an eighth (and
//! at least [`MIN_CHANGE`] routes) since the last time, its B-trees are
//! rebuilt from their sorted contents, each node full, and the memory
//! freed is handed back to the kernel.

use std::time::{Duration, Instant};

/// Route changes in a tick (a second) that mean a load is under way: it
/// would only split the rebuilt nodes again. A live feed's trickle is less.
const BUSY: u64 = 1_024;
/// Below this, the half-full nodes cost a few MiB at most.
const MIN_CHANGE: usize = 65_536;
/// Between compactions at least: a big peer that flaps costs one a while.
const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// One tick's part of a compaction (70-180 ms each at a million routes
/// on this bench's VM), so the loop is never held for all of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The route feed's record (the FPM listener waits for its lock).
    Feed,
    /// The RIB's routes.
    Rib,
    /// The map writer's indexes (DIR-24, IPv6), then the freed memory back.
    Indexes,
}

const STEPS: [Step; 3] = [Step::Feed, Step::Rib, Step::Indexes];

#[derive(Debug, Default)]
pub struct Compaction {
    /// Routes at the last compaction (0 before the first).
    routes_at: usize,
    /// Route changes since the last tick.
    changes: u64,
    done_at: Option<Instant>,
    /// A compaction under way: the routes when it began, its next step.
    under_way: Option<(usize, usize)>,
    /// Compactions done, for `show stats --json` (`compactions`).
    pub runs: u64,
}

impl Compaction {
    /// A route changed (any source).
    pub fn route_changed(&mut self) {
        self.changes += 1;
    }

    /// Whether the tables, now holding `routes`, are due.
    fn due(&self, routes: usize, now: Instant) -> bool {
        let rested = self.done_at.is_none_or(|at| now.saturating_duration_since(at) >= MIN_INTERVAL);
        rested && routes.abs_diff(self.routes_at) >= (self.routes_at / 8).max(MIN_CHANGE)
    }

    /// At each tick: this tick's step, if any (the next of a compaction
    /// under way, or the first of one now due). A busy tick puts off any
    /// step, and a compaction under way begins again once it is quiet.
    pub fn step(&mut self, routes: usize, now: Instant) -> Option<Step> {
        if std::mem::take(&mut self.changes) >= BUSY {
            self.under_way = None;
            return None;
        }
        let (began, next) = match self.under_way {
            Some(u) => u,
            None if self.due(routes, now) => (routes, 0),
            None => return None,
        };
        if next + 1 == STEPS.len() {
            self.under_way = None;
            self.routes_at = began;
            self.done_at = Some(now);
            self.runs += 1;
        } else {
            self.under_way = Some((began, next + 1));
        }
        Some(STEPS[next])
    }
}

/// Hands the heap's free pages back to the kernel (glibc keeps them
/// otherwise: the old nodes' memory would stay resident).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(1);

    /// The steps of the next four quiet ticks from `at`.
    fn quiet_ticks(c: &mut Compaction, routes: usize, at: Instant) -> Vec<Step> {
        (0..4).filter_map(|i| c.step(routes, at + TICK * i)).collect()
    }

    fn busy(c: &mut Compaction) {
        (0..BUSY).for_each(|_| c.route_changed());
    }

    #[test]
    fn due_when_quiet_after_a_big_enough_change_in_three_steps() {
        let (mut c, t0) = (Compaction::default(), Instant::now());
        assert!(c.step(MIN_CHANGE - 1, t0).is_none(), "too small a change");
        busy(&mut c);
        assert!(c.step(1_000_000, t0).is_none(), "a load under way");
        assert_eq!(quiet_ticks(&mut c, 1_000_000, t0 + TICK), STEPS, "one step a tick, then nothing");
        assert_eq!(c.runs, 1);
        // An eighth of a million is 125,000; and not within MIN_INTERVAL.
        assert!(c.step(1_100_000, t0 + MIN_INTERVAL * 2).is_none());
        assert!(c.step(1_125_000, t0 + TICK * 5).is_none(), "too soon after the last");
        assert_eq!(quiet_ticks(&mut c, 1_125_000, t0 + MIN_INTERVAL * 2), STEPS);
        assert_eq!(quiet_ticks(&mut c, 984_000, t0 + MIN_INTERVAL * 4), STEPS, "shrinking counts too");
        assert_eq!(c.runs, 3);
    }

    #[test]
    fn a_load_under_way_puts_a_compaction_off_and_it_begins_again() {
        let (mut c, t0) = (Compaction::default(), Instant::now());
        assert_eq!(c.step(1_000_000, t0), Some(Step::Feed));
        busy(&mut c);
        assert!(c.step(1_000_000, t0 + TICK).is_none(), "busy: put off");
        assert_eq!(quiet_ticks(&mut c, 1_200_000, t0 + TICK * 2), STEPS, "from the first step again");
        assert_eq!(c.runs, 1);
        // The floor holds whatever the table: 1/8 of 100,000 is below it.
        let mut small = Compaction { routes_at: 100_000, ..Compaction::default() };
        assert!(small.step(100_000 + MIN_CHANGE - 1, t0).is_none());
        assert_eq!(small.step(100_000 + MIN_CHANGE, t0), Some(Step::Feed));
    }
}
