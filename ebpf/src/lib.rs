//! What cowroute's two eBPF objects share: the production object (`cowroute`,
//! src/main.rs: the fast path the agent embeds) and the bench's
//! (`cowroute-bench`, src/bench/main.rs: a yardstick forwarder, a traffic
//! generator and a drop program, which never ship in the production object).
#![no_std]

pub mod packet;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
