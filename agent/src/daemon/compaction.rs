//! The agent's tables after a bulk load. A cold start's dump and zebra's
//! replay both come in prefix order, and a B-tree filled in key order
//! splits each node as it fills and leaves it half full: a third more
//! memory a route than the same table inserted at random. Once the routes
//! have been quiet for a while, and the table has grown or shrunk by an
//! eighth (and at least [`MIN_CHANGE`] routes) since the last time, its
//! B-trees are rebuilt from their sorted contents, each node full, and the
//! memory freed is handed back to the kernel.

use std::time::{Duration, Instant};

/// How long no route may have changed: a load still under way would only
/// split the rebuilt nodes again.
const QUIET: Duration = Duration::from_secs(1);
/// Below this, the half-full nodes cost a few MiB at most.
const MIN_CHANGE: usize = 65_536;

/// One tick's part of a compaction: each a few hundred milliseconds at a
/// million routes, so the loop is never held for all of them at once.
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
    changed_at: Option<Instant>,
    /// A compaction under way: the routes when it began, its next step.
    under_way: Option<(usize, usize)>,
    /// Compactions done, for `show stats`.
    pub runs: u64,
}

impl Compaction {
    /// A route changed (any source).
    pub fn route_changed(&mut self, now: Instant) {
        self.changed_at = Some(now);
    }

    /// Whether the tables, now holding `routes`, are due.
    fn due(&self, routes: usize, now: Instant) -> bool {
        let quiet = self.changed_at.is_some_and(|at| now.saturating_duration_since(at) >= QUIET);
        quiet && routes.abs_diff(self.routes_at) >= (self.routes_at / 8).max(MIN_CHANGE)
    }

    /// This tick's step, if any: the next of a compaction under way, or
    /// the first of one now due.
    pub fn step(&mut self, routes: usize, now: Instant) -> Option<Step> {
        let (began, next) = match self.under_way {
            Some(u) => u,
            None if self.due(routes, now) => (routes, 0),
            None => return None,
        };
        if next + 1 == STEPS.len() {
            self.under_way = None;
            self.routes_at = began;
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

    /// The steps of every compaction due, tick by tick.
    fn run(c: &mut Compaction, routes: usize, at: Instant) -> Vec<Step> {
        (0..4).filter_map(|i| c.step(routes, at + QUIET * i)).collect()
    }

    #[test]
    fn due_once_quiet_after_a_big_enough_change_in_three_steps() {
        let (mut c, t0) = (Compaction::default(), Instant::now());
        assert!(c.step(1_000_000, t0 + QUIET).is_none(), "no route changed yet");
        c.route_changed(t0);
        assert!(c.step(1_000_000, t0 + QUIET / 2).is_none(), "not quiet yet");
        assert!(c.step(MIN_CHANGE - 1, t0 + QUIET).is_none(), "too small a change");
        assert_eq!(run(&mut c, 1_000_000, t0 + QUIET), STEPS, "one step a tick, then nothing");
        assert_eq!(c.runs, 1);
        c.route_changed(t0 + QUIET);
        assert!(c.step(1_100_000, t0 + 3 * QUIET).is_none(), "an eighth of a million is 125,000");
        assert_eq!(run(&mut c, 1_125_000, t0 + 3 * QUIET), STEPS);
        c.route_changed(t0 + 3 * QUIET);
        assert_eq!(run(&mut c, 984_000, t0 + 5 * QUIET), STEPS, "shrinking counts too");
        assert_eq!(c.runs, 3);
    }
}
