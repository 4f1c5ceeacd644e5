//! Finds DPDK with pkg-config and compiles the C shim against it. When DPDK is not installed (or
//! HOLDFAST_DPDK_DISABLE is set), emits `cfg(holdfast_dpdk_missing)` instead, so the crate builds as a shell
//! whose entry points return `DpdkError::Missing`, and a workspace build never needs libdpdk-dev.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(holdfast_dpdk_missing)");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=HOLDFAST_DPDK_DISABLE");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    if std::env::var_os("HOLDFAST_DPDK_DISABLE").is_some() {
        missing("HOLDFAST_DPDK_DISABLE is set");
        return;
    }
    let lib = match pkg_config::Config::new().atleast_version("22.11").probe("libdpdk") {
        Ok(lib) => lib,
        Err(e) => {
            missing(&e.to_string());
            return;
        }
    };

    // DPDK's cflags carry more than include paths (`-include rte_config.h`, `-march=...`), and its headers
    // need them: pass them to the shim verbatim.
    let cflags = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut build = cc::Build::new();
    build.file("shim/shim.c").warnings(false);
    for inc in &lib.include_paths {
        build.include(inc);
    }
    let mut words = cflags.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(f) = words.next() {
                build.flag("-include").flag(f);
            }
        } else if !w.starts_with("-I") {
            build.flag_if_supported(w);
        }
    }
    build.compile("holdfast_dpdk_shim");
}

fn missing(why: &str) {
    println!("cargo:rustc-cfg=holdfast_dpdk_missing");
    println!("cargo:warning=holdfast-dpdk-sys: built without DPDK ({why}); install libdpdk-dev for the dpdk backend");
}
