//! Builds the XDP program (nightly, bpfel-unknown-none) with BTF, so the agent
//! embeds it: `OUT_DIR/cowroute`.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "cowroute-ebpf")
        .ok_or_else(|| anyhow!("cowroute-ebpf package not found"))?;
    let root = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("ebpf manifest has no parent"))?;
    // The program also compiles `common/`: rebuild it when that changes.
    let common = root.parent().map(|p| p.join("common")).ok_or_else(|| anyhow!("no workspace root"))?;
    println!("cargo:rerun-if-changed={common}");
    aya_build::build_ebpf(
        [aya_build::Package { name: ebpf.name.as_str(), root_dir: root.as_str(), ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
