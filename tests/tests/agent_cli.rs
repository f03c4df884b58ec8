//! The agent refuses bad input with a message naming the problem, and
//! touches nothing when it does.

use cowroute_tests::*;
use std::process::Command;
use xtask::{agent_proc::cowroute_bin, sh};

fn cowroute(args: &[&str]) -> (i32, String) {
    let out = sh::output(Command::new(cowroute_bin().unwrap()).args(args)).unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A bare namespace with one veth end, removed on drop.
struct Ns(String);

impl Ns {
    fn new(letter: char) -> Ns {
        let name = format!("cr-{}", lab_tag(letter));
        let _ = sh::ip(&["netns", "del", &name]);
        sh::ip(&["netns", "add", &name]).unwrap();
        sh::ip(&["-n", &name, "link", "add", "name", "v0", "type", "veth", "peer", "name", "v1"]).unwrap();
        Ns(name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sh::ip(&["netns", "del", &self.0]);
    }
}

#[test]
fn bad_config_names_file_line_and_field_and_pins_nothing() {
    require_root();
    let ns = Ns::new('c');
    let dir = TempDir::new("badcfg");
    let cfg = dir.0.join("bad.toml");
    let pin = format!("/sys/fs/bpf/cowroute-{}", ns.0);
    let cases = [
        ("[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"v0\"\nmtux = 1400\n", ":4:1: mtux: unknown field"),
        ("[[route]]\nprefix = \"10.0.0.0/33\"\ndev = \"v0\"\n", ":2:10: prefix: \"10.0.0.0/33\" is not an IPv4 or IPv6 prefix"),
        ("[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"v0\"\nmtu = 70000\n", ":4:7: mtu: 70000 is out of range (0 to 65520)"),
        ("[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"nosuch0\"\n", ":1: dev: unknown interface \"nosuch0\""),
        ("[[neighbour]]\naddress = \"10.0.0.1\"\ndev = \"v0\"\nlladdr = \"02:00\"\n", ":4:10: lladdr: \"02:00\" is not a MAC address"),
    ];
    for (text, expected) in cases {
        std::fs::write(&cfg, text).unwrap();
        let (code, err) = cowroute(&[
            "--netns",
            &ns.0,
            "--pin-dir",
            &pin,
            "run",
            "--source",
            "config",
            "--iface",
            "v0",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("{}{expected}", cfg.display())), "expected {expected:?} in: {err}");
        assert!(!std::path::Path::new(&pin).exists(), "nothing pinned on a config error");
    }
}

#[test]
fn unknown_interface_missing_config_and_bad_cli_values_are_rejected() {
    require_root();
    let ns = Ns::new('i');
    let dir = TempDir::new("iface");
    let cfg = dir.0.join("ok.toml");
    std::fs::write(&cfg, "").unwrap();
    let pin = format!("/sys/fs/bpf/cowroute-{}", ns.0);
    let (code, err) = cowroute(&["--netns", &ns.0, "--pin-dir", &pin, "run", "--iface", "nosuch0", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown interface \"nosuch0\""), "{err}");
    let (code, err) = cowroute(&["--netns", &ns.0, "run", "--iface", "v0", "--config", "/nonexistent/cowroute.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/cowroute.toml") && err.contains("cannot read"), "{err}");
    let (code, err) = cowroute(&["--netns", "cr-no-such-ns", "run", "--iface", "v0", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("cr-no-such-ns"), "{err}");
    let (code, err) = cowroute(&["run", "--iface", "v0", "--config", "x", "--xdp-mode", "turbo"]);
    assert_eq!(code, 2);
    assert!(err.contains("turbo"), "{err}");
    let (code, err) = cowroute(&["run", "--iface", "v0", "--config", "x", "--metrics-rw-slots", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("metrics-rw-slots"), "{err}");
}

#[test]
fn show_without_pins_says_what_is_missing() {
    require_root();
    let (code, err) = cowroute(&["--pin-dir", "/sys/fs/bpf/cowroute-none-here", "show", "stats"]);
    assert_eq!(code, 1);
    assert!(err.contains("/sys/fs/bpf/cowroute-none-here/COUNTERS"), "{err}");
}

/// Every subcommand explains itself.
#[test]
fn every_subcommand_has_help() {
    let subcommands: [&[&str]; 12] = [
        &[],
        &["run"],
        &["show", "stats"],
        &["show", "routes"],
        &["show", "nexthops"],
        &["show", "metrics"],
        &["show", "slowpath"],
        &["metrics", "set"],
        &["metrics", "reset"],
        &["metrics", "show"],
        &["attach-peer"],
        &["detach"],
    ];
    for sub in subcommands {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = sh::output(Command::new(cowroute_bin().unwrap()).args(&args)).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            text.contains("Usage: cowroute") && text.lines().next().is_some_and(|l| l.len() > 10),
            "{args:?} has a description and usage:\n{text}"
        );
    }
}

/// The systemd unit's command line is one this cowroute accepts: run with
/// it (and a config that does not exist here), the agent gets as far as the
/// config, not stopped by an unknown flag.
#[test]
fn the_systemd_units_command_line_parses() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/dist/cowroute.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/sbin/cowroute"));
    let args: Vec<&str> = words.map(|w| if w == "/etc/cowroute/cowroute.toml" { "/nonexistent/cowroute.toml" } else { w }).collect();
    let (code, err) = cowroute(&args);
    assert_eq!(code, 1);
    assert!(err.contains("config error: /nonexistent/cowroute.toml:0:0: file: cannot read"), "{err}");
}
