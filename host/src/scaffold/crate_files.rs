//! The files of a new plugin crate, rendered from the templates beside this file.

use std::{fs, path::Path, process::Command};

use toml_edit::{Array, InlineTable, Value};

use super::{names::type_name, GitSource};

const CARGO_TOML: &str = include_str!("Cargo.toml.tmpl");
const RELEASE_PROFILE: &str = include_str!("release_profile.tmpl");
const LIB_RS: &str = include_str!("lib.rs.tmpl");
const README: &str = include_str!("README.md.tmpl");

/// Where the crate takes `mes-plugin-api` from.
pub(super) enum ApiSource<'a> {
    /// The registry's version 1.
    Registry,
    /// A checkout, at this path as the crate's Cargo.toml is to write it.
    Path(String),
    Git(&'a GitSource),
}

impl ApiSource<'_> {
    /// The value of `mes-plugin-api = ...` in the crate's Cargo.toml, with `features`.
    pub(super) fn dependency(&self, features: &[&str]) -> String {
        // Cargo's shorthand for a registry version, what a reader expects.
        if let (ApiSource::Registry, []) = (self, features) {
            return Value::from("1").to_string();
        }
        let mut dep = InlineTable::new();
        match self {
            ApiSource::Registry => {}
            ApiSource::Path(path) => {
                dep.insert("path", path.as_str().into());
            }
            ApiSource::Git(git) => {
                dep.insert("git", git.url.as_str().into());
                if let Some(tag) = &git.tag {
                    dep.insert("tag", tag.as_str().into());
                }
            }
        }
        dep.insert("version", "1".into());
        if !features.is_empty() {
            dep.insert(
                "features",
                Array::from_iter(features.iter().copied()).into(),
            );
        }
        dep.to_string()
    }
}

/// What a new crate is made of.
pub(super) struct CrateFiles<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub api: ApiSource<'a>,
    /// A member of an enclosing workspace, rather than a workspace of its own.
    pub in_workspace: bool,
}

impl CrateFiles<'_> {
    /// The library `cargo build` makes of the crate, e.g. `libcnc_lathe.so`.
    pub(super) fn lib_file(&self) -> String {
        format!(
            "{}{}.{}",
            std::env::consts::DLL_PREFIX,
            self.lib_name(),
            std::env::consts::DLL_EXTENSION
        )
    }

    fn lib_name(&self) -> String {
        self.name.replace('-', "_")
    }

    /// Writes the files into `crate_dir`; what was written is left for the caller to
    /// remove on an error.
    pub(super) fn write(&self, crate_dir: &Path) -> Result<(), String> {
        let vars = self.vars();
        let src = crate_dir.join("src");
        fs::create_dir_all(&src).map_err(|e| format!("cannot create {}: {e}", src.display()))?;
        let mut files = vec![
            (
                crate_dir.join("Cargo.toml"),
                format!("{}\n", render(CARGO_TOML, &vars).trim_end()),
            ),
            (src.join("lib.rs"), render(LIB_RS, &vars)),
            (crate_dir.join("README.md"), render(README, &vars)),
        ];
        // A crate of its own is ready to be a repository of its own; a member's
        // target directory is the workspace's.
        if !self.in_workspace {
            files.push((crate_dir.join(".gitignore"), "/target\n".into()));
        }
        for (path, text) in &files {
            fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        // The template is formatted for names of usual length; a very long class name
        // makes lines rustfmt would wrap, and `cargo fmt --check` would then fail. Best
        // effort: without rustfmt the code is still valid.
        let _ = Command::new("rustfmt")
            .args(["--edition", "2021"])
            .arg(src.join("lib.rs"))
            .output();
        Ok(())
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        let in_workspace = self.in_workspace;
        vec![
            ("crate_name", self.name.to_string()),
            ("class_name", self.class.to_string()),
            ("type_name", type_name(self.class)),
            ("api_dependency", self.api.dependency(&[])),
            ("api_dev_dependency", self.api.dependency(&["testing"])),
            // Cargo reads profiles only from the workspace root's manifest, which a crate
            // of its own is: the `[workspace]` table keeps it so wherever it is kept.
            (
                "release_profile",
                if in_workspace {
                    String::new()
                } else {
                    format!("{RELEASE_PROFILE}\n# A workspace of its own, even inside another one.\n[workspace]\n")
                },
            ),
            ("lib_file", self.lib_file()),
            (
                "package_flag",
                if in_workspace {
                    format!(" -p {}", self.name)
                } else {
                    String::new()
                },
            ),
            (
                "build_where",
                if in_workspace {
                    "From the workspace root:".into()
                } else {
                    "In this directory:".into()
                },
            ),
        ]
    }
}

fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    debug_assert!(!out.contains("{{"), "unrendered placeholder in:\n{out}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_dependency_is_written_as_cargo_toml_would_have_it() {
        assert_eq!(ApiSource::Registry.dependency(&[]), r#""1""#);
        assert_eq!(
            ApiSource::Registry.dependency(&["testing"]),
            r#"{ version = "1", features = ["testing"] }"#
        );
        assert_eq!(
            ApiSource::Path("../../plugin-api".into()).dependency(&[]),
            r#"{ path = "../../plugin-api", version = "1" }"#
        );
        let git = GitSource {
            url: r#"file:///srv/a "b" } \ c.git"#.into(),
            tag: Some("mes-plugin-api-v1.1.0".into()),
        };
        let written = ApiSource::Git(&git).dependency(&["testing"]);
        let read: toml_edit::DocumentMut = format!("api = {written}\n").parse().unwrap();
        assert_eq!(
            read["api"]["git"].as_str(),
            Some(git.url.as_str()),
            "{written}"
        );
        assert_eq!(
            read["api"]["features"][0].as_str(),
            Some("testing"),
            "{written}"
        );
    }
}
