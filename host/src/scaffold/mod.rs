//! `mes-collector new-plugin`: writes a plugin crate that builds, has a unit test and
//! a README, so that a new machine type starts from working code.
//!
//! Inside a Cargo workspace (found upward from `--dir`, as Cargo finds it) the crate
//! is added to the root manifest's `members` and `default-members`, editing only those
//! lists so that the file keeps its layout and comments; `mes-plugin-api` is then
//! depended on by path when the workspace holds it. Elsewhere, or with `--standalone`,
//! the crate is a workspace of its own, ready to be a vendor's own repository, and
//! depends on `mes-plugin-api` "1" (a registry), on `--api-git` (a tag of a collector
//! repository) or on `--api-path` (a checkout).

mod crate_files;
mod names;
mod paths;
mod workspace;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate_files::{ApiSource, CrateFiles};
pub use names::check_class_name;
use names::check_crate_name;

const API_PACKAGE: &str = "mes-plugin-api";

/// What `new-plugin` was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The crate's (package's) name, e.g. `cnc-lathe`.
    pub name: String,
    /// The class name machines are mapped to in `cnc_classes.json`.
    pub class: String,
    /// The directory the crate directory is created in.
    pub dir: PathBuf,
    /// A `mes-plugin-api` checkout to depend on by path, instead of the workspace's
    /// own or the registry's version 1.
    pub api_path: Option<PathBuf>,
    /// A git repository holding `mes-plugin-api` (a clone of the collector's), and
    /// the tag to build against.
    pub api_git: Option<GitSource>,
    /// A crate of its own even inside a workspace.
    pub standalone: bool,
}

/// Where a standalone plugin gets `mes-plugin-api` from git.
#[derive(Debug, Clone)]
pub struct GitSource {
    pub url: String,
    /// A tag such as `mes-plugin-api-v1.1.0`; the default branch if `None`.
    pub tag: Option<String>,
}

/// What `new-plugin` did.
#[derive(Debug)]
pub struct Created {
    pub crate_dir: PathBuf,
    pub lib_file: String,
    /// The root manifest the crate was added to, and its member path.
    pub workspace: Option<(PathBuf, String)>,
    /// How `mes-plugin-api` is depended on, as written into Cargo.toml.
    pub api_dependency: String,
    pub class: String,
    pub name: String,
}

impl Created {
    /// What to do next, for the terminal.
    pub fn next_steps(&self) -> String {
        let mut s = format!(
            "created {} (class {:?}), mes-plugin-api = {}\n",
            self.crate_dir.display(),
            self.class,
            self.api_dependency
        );
        let (cd, package, target) = match &self.workspace {
            Some((manifest, member)) => {
                s.push_str(&format!(
                    "added \"{member}\" to the workspace members in {}\n",
                    manifest.display()
                ));
                let root = manifest.parent().unwrap_or(Path::new("."));
                (
                    root.display().to_string(),
                    format!(" -p {}", self.name),
                    root.join("target"),
                )
            }
            None => (
                self.crate_dir.display().to_string(),
                String::new(),
                self.crate_dir.join("target"),
            ),
        };
        let lib = target.join("release").join(&self.lib_file);
        s.push_str(&format!(
            "\nnext:\n  cd {cd}\n  cargo test{package}\n  cargo build --release{package}\n  \
             install -m 0644 {} <the collector's plugins_dir>/\n  \
             map machines to \"{}\" in cnc_classes.json, then: mes-collector check --config-dir <dir>\n  \
             mes-collector replay --plugin {} --cnc-id <cnc_id> messages.jsonl\n",
            lib.display(),
            self.class,
            lib.display()
        ));
        s
    }
}

/// `mes-collector new-plugin`: 2 when nothing was created, as for the other commands'
/// errors.
pub fn main(req: &Request) -> ExitCode {
    match new_plugin(req) {
        Ok(created) => {
            print!("{}", created.next_steps());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("new-plugin: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes the crate. Nothing is written unless every check passes first.
pub fn new_plugin(req: &Request) -> Result<Created, String> {
    check_crate_name(&req.name)?;
    check_class_name(&req.class)?;
    let dir = paths::absolute(&req.dir)?;
    let crate_dir = dir.join(&req.name);
    if crate_dir.exists() {
        return Err(format!(
            "{} already exists; new-plugin never overwrites: choose another name or --dir, or remove it",
            crate_dir.display()
        ));
    }
    let workspace = if req.standalone {
        None
    } else {
        workspace::find_root(&dir)?
    };
    let member = workspace
        .as_ref()
        .map(|root| workspace::member_path(root, &crate_dir))
        .transpose()?;
    let api_dir = match (&req.api_path, &workspace) {
        (Some(p), _) => Some(api_checkout(p)?),
        (None, Some(root)) => workspace::plugin_api(root),
        (None, None) => None,
    };
    if let (Some(root), Some(member)) = (&workspace, &member) {
        workspace::check_unique_package(root, &req.name)?;
        // Fails here, before anything is written, if the manifest cannot be edited.
        workspace::edited_manifest(root, member)?;
    }

    let api = match (&req.api_git, &api_dir) {
        (Some(git), _) => ApiSource::Git(git),
        // Relative inside a workspace, so that the checkout can move; absolute for a
        // crate of its own, which lives wherever its author keeps it.
        (None, Some(api_dir)) => ApiSource::Path(match &workspace {
            Some(root) if api_dir.starts_with(root) => paths::relative_path(api_dir, &crate_dir),
            _ => api_dir.display().to_string(),
        }),
        (None, None) => ApiSource::Registry,
    };
    let files = CrateFiles {
        name: &req.name,
        class: &req.class,
        api,
        in_workspace: workspace.is_some(),
    };
    if let Err(e) = files.write(&crate_dir) {
        let _ = fs::remove_dir_all(&crate_dir);
        return Err(e);
    }
    let workspace = match (workspace, member) {
        // Read again just before writing: the manifest may have changed meanwhile.
        (Some(root), Some(member)) => match workspace::write_member(&root, &member) {
            Ok(manifest) => Some((manifest, member)),
            Err(e) => {
                let _ = fs::remove_dir_all(&crate_dir);
                return Err(e);
            }
        },
        _ => None,
    };
    Ok(Created {
        crate_dir,
        lib_file: files.lib_file(),
        workspace,
        api_dependency: files.api.dependency(&[]),
        class: req.class.clone(),
        name: req.name.clone(),
    })
}

fn api_checkout(path: &Path) -> Result<PathBuf, String> {
    let dir = paths::absolute(path)?;
    match workspace::package_name(&dir) {
        Some(name) if name == API_PACKAGE => Ok(dir),
        Some(name) => Err(format!(
            "--api-path {}: its Cargo.toml is package {name:?}, not {API_PACKAGE}; give the plugin-api directory of a clone of the collector",
            path.display()
        )),
        None => Err(format!(
            "--api-path {}: no Cargo.toml with a package name there; give the plugin-api directory of a clone of the collector",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = r#"[workspace]
resolver = "2"
members = [
    "plugin-api",
    "host", # the collector
]
default-members = ["plugin-api", "host"]
"#;

    #[test]
    fn in_a_workspace_the_crate_is_a_member_depending_on_the_workspace_api() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        fs::write(root_path.join("Cargo.toml"), ROOT).unwrap();
        fs::create_dir(root_path.join("plugin-api")).unwrap();
        fs::write(
            root_path.join("plugin-api/Cargo.toml"),
            "[package]\nname = \"mes-plugin-api\"\nversion = \"1.0.0\"\n",
        )
        .unwrap();
        let req = Request {
            name: "cnc-lathe".into(),
            class: "Lathe".into(),
            dir: root_path.join("plugins"),
            api_path: None,
            api_git: None,
            standalone: false,
        };
        let made = new_plugin(&req).unwrap();
        let manifest = fs::read_to_string(made.crate_dir.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(r#"mes-plugin-api = { path = "../../plugin-api", version = "1" }"#),
            "{manifest}"
        );
        assert!(!manifest.contains("[profile"), "{manifest}");
        let root_manifest = fs::read_to_string(root_path.join("Cargo.toml")).unwrap();
        assert_eq!(root_manifest.matches("\"plugins/cnc-lathe\"").count(), 2);
        let lib = fs::read_to_string(made.crate_dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("const CLASS_NAME: &'static str = \"Lathe\";"));

        let again = new_plugin(&req).unwrap_err();
        assert!(again.contains("already exists"), "{again}");
        let dup = new_plugin(&Request {
            dir: root_path.join("other"),
            ..req
        })
        .unwrap_err();
        assert!(dup.contains("already has a package named"), "{dup}");
    }

    #[test]
    fn a_standalone_crate_inside_a_workspace_stays_out_of_it_and_can_depend_on_a_git_tag() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        fs::write(root_path.join("Cargo.toml"), ROOT).unwrap();
        let made = new_plugin(&Request {
            name: "vendor-lathe".into(),
            class: "VendorLathe".into(),
            dir: root_path.join("vendor"),
            api_path: None,
            api_git: Some(GitSource {
                url: "https://git.example.com/mes-collector.git".into(),
                tag: Some("mes-plugin-api-v1.1.0".into()),
            }),
            standalone: true,
        })
        .unwrap();
        assert!(made.workspace.is_none());
        assert_eq!(
            fs::read_to_string(root_path.join("Cargo.toml")).unwrap(),
            ROOT
        );
        let manifest = fs::read_to_string(made.crate_dir.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(
                r#"mes-plugin-api = { git = "https://git.example.com/mes-collector.git", tag = "mes-plugin-api-v1.1.0", version = "1" }"#
            ) && manifest.contains(
                r#"mes-plugin-api = { git = "https://git.example.com/mes-collector.git", tag = "mes-plugin-api-v1.1.0", version = "1", features = ["testing"] }"#
            ),
            "{manifest}"
        );
        assert!(
            manifest.contains("\n[workspace]\n") && manifest.contains("[profile.release]"),
            "{manifest}"
        );
        assert!(made.crate_dir.join(".gitignore").exists());
    }
}
