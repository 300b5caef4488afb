//! What cargo builds for the tests: the workspace's libraries in target/debug, and
//! crates outside the workspace (fixtures, scaffolded plugins) built the way their
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
    target_dir().parent().unwrap().to_path_buf()
}

/// target/debug (or wherever this test binary was built).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The library `cargo build` makes of crate `crate_name` in `profile_dir` (a
/// `target/debug`).
pub fn lib_in(profile_dir: &Path, crate_name: &str) -> PathBuf {
    profile_dir.join(format!(
        "{}{}.{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    ))
}

/// A plugin library built by `cargo build --workspace` (scripts/test.sh does that
/// before the tests).
pub fn plugin_lib(crate_name: &str) -> PathBuf {
    let path = lib_in(&target_dir(), crate_name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (scripts/test.sh does)",
        path.display()
    );
    path
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
