//! The per-interface sysctls the kernel's source validation reads
//! (`fib_validate_source`, `ip_route_input_slow`), from /proc/sys/net/ipv4/conf
//! of the agent's namespace. No netlink event announces a change of most of
//! them (NETCONF carries rp_filter only), so the daemon reads them again
//! every second and on every link event.

use crate::rib::types::PortSysctls;
use std::path::Path;

const CONF: &str = "/proc/sys/net/ipv4/conf";

fn read(dev: &str, name: &str) -> Option<u8> {
    std::fs::read_to_string(Path::new(CONF).join(dev).join(name)).ok()?.trim().parse().ok()
}

/// Interface `dev`'s values combined with `all` as the kernel combines
/// them; `None` when the interface has no IPv4 configuration (gone, or not
/// an IPv4 device).
pub fn port_sysctls(dev: &str) -> Option<PortSysctls> {
    let both = |name: &str| -> Option<(u8, u8)> { Some((read("all", name).unwrap_or(0), read(dev, name)?)) };
    let (all_rpf, dev_rpf) = both("rp_filter")?;
    let or = |name: &str| both(name).is_some_and(|(a, d)| a != 0 || d != 0);
    Some(PortSysctls {
        rp_filter: all_rpf.max(dev_rpf),
        accept_local: or("accept_local"),
        route_localnet: or("route_localnet"),
        send_redirects: or("send_redirects"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_values_and_a_missing_device_none() {
        let lo = port_sysctls("lo").expect("lo's conf");
        assert!(lo.rp_filter <= 2);
        assert_eq!(port_sysctls("no-such-device-x"), None);
    }
}
