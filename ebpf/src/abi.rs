//! The ABI stamp map: never read by the program; the agent writes this
//! build's [`common::abi::STAMP`] and an adopting agent checks it.

use aya_ebpf::{btf_maps::Array, macros::btf_map};
use common::abi::AbiStamp;

#[btf_map]
pub static ABI_STAMP: Array<AbiStamp, 1> = Array::new();
