//! `lxc-testbed up|down`: prepares the LXC testbed (bridge, apt proxy, base container) and keeps
//! it up for trying `pvesim --lxc` by hand, then removes it again.

use hostplane_tests::lxc::{BASE_CONTAINER, BRIDGE, HOST_ADDRESS, PREFIX_LENGTH, Testbed};

fn main() -> anyhow::Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "up" => {
            let Some(proxy) = Testbed::hold()? else {
                return Ok(());
            };
            println!("bridge {BRIDGE} {HOST_ADDRESS}/{PREFIX_LENGTH}");
            println!("apt proxy {proxy}");
            println!("base container {BASE_CONTAINER}");
            println!("next: pvesim --plain-http --token ... --lxc --lxc-apt-proxy {proxy}");
        }
        "down" => {
            let prefix = std::env::args()
                .nth(2)
                .unwrap_or_else(|| "pvesim-".to_string());
            let teardown = Testbed::release_hold(&prefix)?;
            if teardown.removed_bridge_and_proxy {
                println!("removed the bridge {BRIDGE} and the apt proxy");
            } else {
                println!("a test still uses the testbed: bridge and proxy kept");
            }
        }
        _ => anyhow::bail!(
            "usage: lxc-testbed up | lxc-testbed down [CONTAINER-PREFIX, default pvesim-]"
        ),
    }
    Ok(())
}
