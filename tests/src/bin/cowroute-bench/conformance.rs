//! The conformance suite's long mode (README, "Conformance with Linux"):
//! every hand-written case and `frames` generated ones through rtr in four
//! runs, Linux, cowroute with kernel forwarding off and on, and Linux again
//! (the lab against itself: its differences must be none).

use anyhow::Result;
use cowroute_tests::conformance::{self, runner::Mode, Figures};

pub fn measure(frames: usize, say: &(dyn Fn(&str) + Sync)) -> Result<Figures> {
    let modes = [Mode::Linux, Mode::CowrouteKernelOff, Mode::CowrouteKernelOn, Mode::LinuxAgain];
    let tag = format!("k{}", std::process::id() % 100_000);
    let out = conformance::run_suite(&tag, frames, &modes, say);
    for d in out.unexpected() {
        say(&d.to_string());
    }
    let f = out.figures();
    say(&format!(
        "conformance: {} hand-written cases, {} generated frames, {} frames a run, runs {:?}: {} differences ({} known, {} unexpected, {} Linux against Linux), {:.0} s",
        f.hand_written_cases,
        f.generated_frames,
        f.frames_per_run,
        f.runs,
        f.differences,
        f.known_differences,
        f.unexpected_differences,
        f.linux_against_linux,
        f.seconds
    ));
    for (reason, n) in &f.known_by_reason {
        say(&format!("  known: {n:>6}  {reason}"));
    }
    Ok(f)
}
