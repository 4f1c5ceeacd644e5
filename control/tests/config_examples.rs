//! Every example configuration shipped in config/ parses and validates, so the examples never rot.

use control::config::Config;
use std::path::Path;

#[test]
fn shipped_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected the development and appliance examples in {}", dir.display());
}

#[test]
fn the_appliance_example_is_a_pinned_busy_polling_primary_with_a_standby() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let cfg = Config::load(&dir.join("appliance.example.toml")).unwrap();
    assert_eq!(cfg.cores.pin, vec![2, 3]);
    assert!(cfg.replication.is_some());
    assert!(cfg.addresses.virtual_mac.is_some());
}
