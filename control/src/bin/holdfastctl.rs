//! `holdfastctl`: the control client (speaks the JSON control socket).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("holdfastctl: not yet: the control socket has not landed");
    ExitCode::from(2)
}
