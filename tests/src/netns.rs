//! A network namespace joined to this one by a veth pair, for partition tests: processes run
//! in it with `ip netns exec`, and cutting the link cuts them off without touching them.

use std::process::Command;

/// A namespace `name` whose end of the link has address [`NetNamespace::inside`], and whose
/// peer in this namespace has [`NetNamespace::outside`]. Removed on drop.
pub struct NetNamespace {
    /// The namespace's name.
    pub name: String,
    /// This namespace's address on the link.
    pub outside: String,
    /// The namespace's address on the link.
    pub inside: String,
    host_link: String,
    inner_link: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output =
        Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip`: {e}; install iproute2"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
}

impl NetNamespace {
    /// Creates the namespace and its link (needs root or CAP_NET_ADMIN); the error says which
    /// step failed.
    pub fn create() -> Result<NetNamespace, String> {
        let id = std::process::id() % 100_000;
        let subnet = 1 + std::process::id() % 250;
        let ns = NetNamespace {
            name: format!("squall-{id}"),
            outside: format!("10.231.{subnet}.1"),
            inside: format!("10.231.{subnet}.2"),
            host_link: format!("sqh{id}"),
            inner_link: format!("sqn{id}"),
        };
        // Leftovers of a crashed run with the same pid.
        let _ = ip(&["link", "del", &ns.host_link]);
        let _ = ip(&["netns", "del", &ns.name]);
        ip(&["netns", "add", &ns.name])?;
        ip(&["link", "add", &ns.host_link, "type", "veth", "peer", "name", &ns.inner_link])?;
        ip(&["link", "set", &ns.inner_link, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{}/24", ns.outside), "dev", &ns.host_link])?;
        ip(&["link", "set", &ns.host_link, "up"])?;
        ns.exec(&["ip", "addr", "add", &format!("{}/24", ns.inside), "dev", &ns.inner_link])?;
        ns.exec(&["ip", "link", "set", &ns.inner_link, "up"])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec(&self, command: &[&str]) -> Result<(), String> {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(command);
        ip(&args)
    }

    /// Cuts the link from inside: nothing in the namespace reaches out or is reached, and
    /// established connections hang rather than reset, as in a real partition. Addresses
    /// outside stay usable locally.
    pub fn cut(&self) -> Result<(), String> {
        self.exec(&["ip", "link", "set", &self.inner_link, "down"])
    }

    /// Restores the link.
    pub fn heal(&self) -> Result<(), String> {
        self.exec(&["ip", "link", "set", &self.inner_link, "up"])
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
