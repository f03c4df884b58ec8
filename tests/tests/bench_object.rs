//! The bench's XDP programs live in an object of their own: the production
//! object the agent embeds (and loads) holds only the production programs,
//! the agent binary does not carry the bench's object, and the bench's
//! object still passes the verifier.

use cowroute::{bench_object, dataplane, EBPF_OBJECT};
use std::collections::BTreeSet;

fn programs(object: &[u8]) -> BTreeSet<String> {
    aya_obj::Object::parse(object).expect("parse the eBPF object").programs.into_keys().collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_production_object_holds_only_production_programs() {
    assert_eq!(programs(EBPF_OBJECT), names(&dataplane::PROGRAMS));
    assert_eq!(programs(bench_object::OBJECT), names(&bench_object::PROGRAMS));
    // The bench's object brings no map of the data plane (only its globals).
    let bench = aya_obj::Object::parse(bench_object::OBJECT).unwrap();
    let shared: Vec<&String> = bench.maps.keys().filter(|m| common::maps::ALL.contains(&m.as_str())).collect();
    assert!(shared.is_empty(), "the bench's object defines data-plane maps: {shared:?}");
}

#[test]
fn the_agent_binary_does_not_carry_the_bench_object() {
    let bin = xtask::agent_proc::cowroute_bin().expect("the agent binary");
    let bytes = std::fs::read(&bin).expect("read the agent binary");
    let has = |needle: &str| memchr::memmem::find(&bytes, needle.as_bytes()).is_some();
    // It embeds the production object (its pass program's name is in the object's symbols) ...
    assert!(has("cowroute_pass"), "{} embeds no eBPF object?", bin.display());
    // ... and nothing of the bench's.
    for name in bench_object::PROGRAMS {
        assert!(!has(name), "{} carries the bench's program {name}", bin.display());
    }
}

#[test]
fn the_bench_programs_pass_the_verifier() {
    cowroute_tests::require_root();
    let mut ebpf = aya::EbpfLoader::new().load(bench_object::OBJECT).expect("load the bench's object");
    for name in bench_object::PROGRAMS {
        let prog: &mut aya::programs::Xdp = ebpf.program_mut(name).expect(name).try_into().expect("XDP");
        prog.load().unwrap_or_else(|e| panic!("the verifier rejected {name}: {e:?}"));
    }
}
