//! The bench's own XDP programs (a drop sink, the reference forwarder), from
//! the bench's object ([`cowroute::bench_object`]), never the production one.

use anyhow::{anyhow, Context as _, Result};
use aya::{programs::Xdp, Ebpf};
use std::path::Path;

/// Loads the bench's object (its maps: its globals and the generator's destinations).
pub fn load(loader: &mut aya::EbpfLoader) -> Result<Ebpf> {
    loader.load(cowroute::bench_object::OBJECT).context("loading the bench's eBPF object")
}

/// Attaches `program` of the bench's object to `iface` in namespace `netns`
/// in native mode, its link pinned at `pin` (so it outlives this process
/// until the pin goes), its `globals` set at load time.
pub fn attach(program: &str, netns: &str, iface: &str, pin: &Path, globals: &[(&'static str, u32)]) -> Result<()> {
    let (program, netns, iface, pin, globals) =
        (program.to_string(), netns.to_string(), iface.to_string(), pin.to_owned(), globals.to_vec());
    // A thread of its own: entering the namespace moves only the caller.
    std::thread::spawn(move || -> Result<()> {
        common::netns::enter(&netns)?;
        let mut loader = aya::EbpfLoader::new();
        for (name, value) in &globals {
            loader.override_global(name, value, true);
        }
        let mut ebpf = load(&mut loader)?;
        let prog: &mut Xdp = ebpf.program_mut(&program).with_context(|| format!("no program {program}"))?.try_into()?;
        cowroute::dataplane::attach_pinned(prog, &program, &iface, &pin)
            .with_context(|| format!("attaching {program} to {iface} in {netns}"))
    })
    .join()
    .map_err(|_| anyhow!("the attaching thread panicked"))?
}
