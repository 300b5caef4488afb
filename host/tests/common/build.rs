//! Building crates outside the workspace (fixtures, scaffolded plugins) the way their
//! authors would, into target directories of their own under the workspace's.

use std::{
    borrow::BorrowMut,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The workspace root (the directory of the root Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target`, where `target_dir()` is `target/debug`.
pub fn workspace_target() -> PathBuf {
    super::target_dir().parent().unwrap().to_path_buf()
}

/// The cargo running the tests.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// A command's status and output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command and fails the test, with its output, unless it succeeds.
pub fn run_ok(mut cmd: impl BorrowMut<Command>) -> Output {
    let cmd = cmd.borrow_mut();
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    out
}

/// `cargo build --manifest-path <manifest> --target-dir <target> <args>`.
pub fn cargo_build(manifest: &Path, target: &Path, args: &[&str]) -> Output {
    run_ok(
        cargo()
            .arg("build")
            .arg("--manifest-path")
            .arg(manifest)
            .arg("--target-dir")
            .arg(target)
            .args(args),
    )
}
