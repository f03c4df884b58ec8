//! The veth lab: three namespaces, gen -- rtr -- sink.
//!
//! ```text
//!  gen                    rtr                       sink
//!  {t}g0 10.1.0.2/24 ---- {t}r0 10.1.0.1/24
//!        fd00:1::2/64           fd00:1::1/64
//!                         {t}r1 10.2.0.1/24 ------ {t}s0 10.2.0.2/24, 10.2.0.3/24
//!                               fd00:2::1/64             fd00:2::2/64, fd00:2::3/64
//! ```
//!
//! Kernel forwarding is off in rtr, so only cowroute's XDP program can carry
//! traffic from gen to sink. Everything is created inside the lab's own
//! namespaces (the veth pairs are born there), and removed on drop.

use crate::sh::{self, in_ns};
use anyhow::{bail, Context as _, Result};
use std::{path::PathBuf, process::Command};

pub const GEN_V4: &str = "10.1.0.2";
pub const RTR_GEN_V4: &str = "10.1.0.1";
pub const RTR_SINK_V4: &str = "10.2.0.1";
pub const SINK_V4: &str = "10.2.0.2";
pub const GEN_V6: &str = "fd00:1::2";
pub const RTR_GEN_V6: &str = "fd00:1::1";
pub const RTR_SINK_V6: &str = "fd00:2::1";
pub const SINK_V6: &str = "fd00:2::2";
/// A second address of sink: another destination under the same prefixes.
pub const SINK2_V4: &str = "10.2.0.3";
pub const SINK2_V6: &str = "fd00:2::3";
/// The second rtr-sink link ([`Lab::add_second_link`]): rtr's end and sink's.
pub const RTR_SINK_B_V4: &str = "10.3.0.1";
pub const SINK_B_V4: &str = "10.3.0.2";
pub const RTR_SINK_B_V6: &str = "fd00:3::1";
pub const SINK_B_V6: &str = "fd00:3::2";
/// The far network behind sink ([`Lab::add_far_network`]).
pub const SINK_FAR_V4: &str = "10.7.0.1";
pub const FAR_V4: &str = "10.7.0.2";
pub const SINK_FAR_V6: &str = "fd00:7::1";
pub const FAR_V6: &str = "fd00:7::2";

pub struct Lab {
    pub tag: String,
    pub gen: String,
    pub rtr: String,
    pub sink: String,
    /// gen's end of the gen-rtr pair.
    pub gen_if: String,
    /// rtr's end towards gen.
    pub rtr_gen_if: String,
    /// rtr's end towards sink.
    pub rtr_sink_if: String,
    /// sink's end of the rtr-sink pair.
    pub sink_if: String,
    /// Where the veth peers' pass programs are pinned (native mode).
    pub pass_pin_dir: PathBuf,
    /// RX and TX queues of each end of the gen-rtr pair.
    pub queues: u32,
    torn_down: bool,
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

impl Lab {
    /// Names for lab `tag` (at most 8 characters: interface names are short).
    pub fn named(tag: &str) -> Result<Lab> {
        if tag.is_empty() || tag.len() > 8 || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("lab tag {tag:?} must be 1 to 8 letters or digits");
        }
        Ok(Lab {
            tag: tag.into(),
            gen: format!("cr-{tag}-gen"),
            rtr: format!("cr-{tag}-rtr"),
            sink: format!("cr-{tag}-sink"),
            gen_if: format!("{tag}g0"),
            rtr_gen_if: format!("{tag}r0"),
            rtr_sink_if: format!("{tag}r1"),
            sink_if: format!("{tag}s0"),
            pass_pin_dir: PathBuf::from(format!("/sys/fs/bpf/cowroute-lab-{tag}")),
            queues: 1,
            torn_down: false,
        })
    }

    /// Builds the lab; on failure removes whatever part of it was built.
    pub fn up(tag: &str) -> Result<Lab> {
        Lab::up_with_queues(tag, 1)
    }

    /// As [`Lab::up`], with `queues` RX and TX queues on both ends of the
    /// gen-rtr pair (a veth takes its RX queue from the sender's TX queue).
    pub fn up_with_queues(tag: &str, queues: u32) -> Result<Lab> {
        let mut lab = Lab::named(tag)?;
        lab.queues = queues;
        lab.teardown_quietly();
        match lab.build() {
            Ok(()) => Ok(lab),
            Err(e) => {
                lab.teardown_quietly();
                Err(e.context(format!("building lab {tag}")))
            }
        }
    }

    fn build(&self) -> Result<()> {
        for ns in [&self.gen, &self.rtr, &self.sink] {
            sh::ip(&["netns", "add", ns])?;
            sh::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // The pairs are created directly inside the namespaces.
        let q = self.queues.to_string();
        let queues = ["numtxqueues", &q, "numrxqueues", &q];
        let (ours, peer) = (
            ["link", "add", "name", &self.gen_if, "netns", &self.gen],
            ["type", "veth", "peer", "name", &self.rtr_gen_if, "netns", &self.rtr],
        );
        sh::ip(&[&ours[..], &queues, &peer, &queues].concat())?;
        sh::ip(&[
            "link",
            "add",
            "name",
            &self.sink_if,
            "netns",
            &self.sink,
            "type",
            "veth",
            "peer",
            "name",
            &self.rtr_sink_if,
            "netns",
            &self.rtr,
        ])?;
        let addrs = [
            (&self.gen, &self.gen_if, GEN_V4, GEN_V6),
            (&self.rtr, &self.rtr_gen_if, RTR_GEN_V4, RTR_GEN_V6),
            (&self.rtr, &self.rtr_sink_if, RTR_SINK_V4, RTR_SINK_V6),
            (&self.sink, &self.sink_if, SINK_V4, SINK_V6),
        ];
        for (ns, dev, v4, v6) in addrs {
            sh::ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            sh::ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            sh::ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        sh::ip(&["-n", &self.sink, "addr", "add", &format!("{SINK2_V4}/24"), "dev", &self.sink_if])?;
        sh::ip(&["-n", &self.sink, "addr", "add", &format!("{SINK2_V6}/64"), "dev", &self.sink_if, "nodad"])?;
        sh::ip(&["-n", &self.gen, "route", "add", "default", "via", RTR_GEN_V4])?;
        sh::ip(&["-n", &self.gen, "-6", "route", "add", "default", "via", RTR_GEN_V6])?;
        sh::ip(&["-n", &self.sink, "route", "add", "default", "via", RTR_SINK_V4])?;
        sh::ip(&["-n", &self.sink, "-6", "route", "add", "default", "via", RTR_SINK_V6])?;
        // Only XDP may forward in rtr.
        sh::run(&mut in_ns(&self.rtr, "sysctl", &["-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"]))?;
        // Hosts send whole checksums, as frames on a wire carry: a veth
        // otherwise leaves the UDP/TCP checksum to an offload that an XDP
        // redirect skips.
        for (ns, dev) in [(&self.gen, &self.gen_if), (&self.sink, &self.sink_if)] {
            sh::run(&mut in_ns(ns, "ethtool", &["-K", dev, "tx", "off"]))?;
        }
        self.wait_for_carrier()
    }

    /// A second link between rtr ({t}r2, 10.3.0.1/24, fd00:3::1/64) and
    /// sink ({t}s1, 10.3.0.2/24, fd00:3::2/64): two paths to one place, for
    /// ECMP. Returns (rtr's end, sink's end). Sink accepts what arrives on
    /// either (no reverse-path filter).
    pub fn add_second_link(&self) -> Result<(String, String)> {
        let (r2, s1) = (format!("{}r2", self.tag), format!("{}s1", self.tag));
        sh::ip(&["link", "add", "name", &s1, "netns", &self.sink, "type", "veth", "peer", "name", &r2, "netns", &self.rtr])?;
        for (ns, dev, v4, v6) in [(&self.rtr, &r2, RTR_SINK_B_V4, RTR_SINK_B_V6), (&self.sink, &s1, SINK_B_V4, SINK_B_V6)] {
            sh::ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            sh::ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            sh::ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        sh::run(&mut in_ns(&self.sink, "sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=0", &format!("net.ipv4.conf.{s1}.rp_filter=0")]))?;
        Self::wait_up(&[(&self.rtr, &r2), (&self.sink, &s1)])?;
        Ok((r2, s1))
    }

    /// A fourth namespace, far, behind sink over a link of `mtu` bytes: sink
    /// ({t}s2, 10.7.0.1/24, fd00:7::1/64) becomes a kernel router, far ({t}f0,
    /// 10.7.0.2/24, fd00:7::2/64) routes everything through it. A packet
    /// too big for that link gets its ICMP error from sink, through rtr.
    /// Returns (far's namespace, far's interface).
    pub fn add_far_network(&self, mtu: u32) -> Result<(String, String)> {
        let far = self.far_ns();
        let (s2, f0) = (format!("{}s2", self.tag), format!("{}f0", self.tag));
        sh::ip(&["netns", "add", &far])?;
        sh::ip(&["-n", &far, "link", "set", "lo", "up"])?;
        sh::ip(&["link", "add", "name", &f0, "netns", &far, "type", "veth", "peer", "name", &s2, "netns", &self.sink])?;
        for (ns, dev, v4, v6) in [(&self.sink, &s2, SINK_FAR_V4, SINK_FAR_V6), (&far, &f0, FAR_V4, FAR_V6)] {
            sh::ip(&["-n", ns, "link", "set", dev, "mtu", &mtu.to_string()])?;
            sh::ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            sh::ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            sh::ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        sh::ip(&["-n", &far, "route", "add", "default", "via", SINK_FAR_V4])?;
        sh::ip(&["-n", &far, "-6", "route", "add", "default", "via", SINK_FAR_V6])?;
        sh::run(&mut in_ns(&self.sink, "sysctl", &["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]))?;
        sh::run(&mut in_ns(&far, "ethtool", &["-K", &f0, "tx", "off"]))?;
        Self::wait_up(&[(&self.sink, &s2), (&far, &f0)])?;
        Ok((far, f0))
    }

    fn far_ns(&self) -> String {
        format!("cr-{}-far", self.tag)
    }

    /// A veth's carrier comes up asynchronously after `ip link set up`: wait
    /// for every end to be operationally up, so that the lab is ready when
    /// `up` returns.
    fn wait_for_carrier(&self) -> Result<()> {
        Self::wait_up(&[
            (&self.gen, &self.gen_if),
            (&self.rtr, &self.rtr_gen_if),
            (&self.rtr, &self.rtr_sink_if),
            (&self.sink, &self.sink_if),
        ])
    }

    fn wait_up(ends: &[(&String, &String)]) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for &(ns, dev) in ends {
            loop {
                let state = sh::ip(&["-n", ns, "-br", "link", "show", "dev", dev])?;
                if state.split_whitespace().nth(1) == Some("UP") {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!("{dev} in {ns} is not up after 10 s: {state}");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Attaches the pass-only program to the veth peers of rtr (gen's and
    /// sink's ends), which native-mode redirects into a veth need.
    pub fn attach_peer_pass_programs(&self, cowroute_bin: &std::path::Path) -> Result<()> {
        for (ns, dev) in [(&self.gen, &self.gen_if), (&self.sink, &self.sink_if)] {
            self.attach_peer_pass(cowroute_bin, ns, dev)?;
        }
        Ok(())
    }

    /// Attaches the pass-only program to `dev` in `ns`, pinned under the
    /// lab's pin directory (`peer-DEV`).
    pub fn attach_peer_pass(&self, cowroute_bin: &std::path::Path, ns: &str, dev: &str) -> Result<()> {
        let pin = self.peer_pin(dev);
        let mut c = Command::new(cowroute_bin);
        c.args(["--netns", ns, "attach-peer", "--iface", dev, "--pin"]).arg(&pin);
        sh::run(&mut c).with_context(|| format!("attaching the peer program to {dev}"))?;
        Ok(())
    }

    /// Where the link of a program on the veth end `dev` is pinned; the
    /// lab's teardown removes it.
    pub fn peer_pin(&self, dev: &str) -> PathBuf {
        self.pass_pin_dir.join(format!("peer-{dev}"))
    }

    /// The rtr config: connected routes both ways, v4 and v6, with the sink's
    /// prefixes sharing one metric set, and the hosts as neighbours to resolve.
    pub fn router_config(&self) -> String {
        self.hosts_config() + &self.routes_config()
    }

    /// The routes of [`Lab::router_config`] (`--source config`).
    pub fn routes_config(&self) -> String {
        format!(
            r#"
[[route]]
prefix = "10.1.0.0/24"
dev = "{r0}"

[[route]]
prefix = "fd00:1::/64"
dev = "{r0}"

[[route]]
prefix = "10.2.0.0/24"
dev = "{r1}"
mtu = 1500
advmss = 1460

[[route]]
prefix = "fd00:2::/64"
dev = "{r1}"
mtu = 1500
advmss = 1460
"#,
            r0 = self.rtr_gen_if,
            r1 = self.rtr_sink_if,
        )
    }

    /// rtr's interfaces and the hosts as neighbours to resolve; the routes
    /// come from elsewhere (`--source kernel`).
    pub fn hosts_config(&self) -> String {
        format!(
            r#"# cowroute lab {tag}: rtr forwards between gen and sink.
interfaces = ["{r0}", "{r1}"]

[[neighbour]]
address = "{gen4}"
dev = "{r0}"

[[neighbour]]
address = "{gen6}"
dev = "{r0}"

[[neighbour]]
address = "{sink4}"
dev = "{r1}"

[[neighbour]]
address = "{sink6}"
dev = "{r1}"

[[neighbour]]
address = "{sink2_4}"
dev = "{r1}"

[[neighbour]]
address = "{sink2_6}"
dev = "{r1}"
"#,
            tag = self.tag,
            r0 = self.rtr_gen_if,
            r1 = self.rtr_sink_if,
            gen4 = GEN_V4,
            gen6 = GEN_V6,
            sink4 = SINK_V4,
            sink6 = SINK_V6,
            sink2_4 = SINK2_V4,
            sink2_6 = SINK2_V6,
        )
    }

    fn teardown_quietly(&self) {
        for ns in [&self.gen, &self.rtr, &self.sink, &self.far_ns()] {
            if netns_exists(ns) {
                let _ = sh::ip(&["netns", "del", ns]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.pass_pin_dir);
    }

    /// Removes the namespaces (and with them the veths) and the pins.
    pub fn down(mut self) -> Result<()> {
        self.torn_down = true;
        self.teardown_quietly();
        for ns in [&self.gen, &self.rtr, &self.sink] {
            if netns_exists(ns) {
                bail!("namespace {ns} is still present after teardown");
            }
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.torn_down {
            self.teardown_quietly();
        }
    }
}
