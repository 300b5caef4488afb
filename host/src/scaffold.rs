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

use std::{
    fs,
    path::{Component, Path, PathBuf},
    process::{Command, ExitCode},
};

use toml_edit::{Array, DocumentMut, InlineTable, Item, RawString, Table, Value};

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.tmpl");
const RELEASE_PROFILE: &str = include_str!("scaffold/release_profile.tmpl");
const LIB_RS: &str = include_str!("scaffold/lib.rs.tmpl");
const README: &str = include_str!("scaffold/README.md.tmpl");

const API_PACKAGE: &str = "mes-plugin-api";
/// `dead_letters.plugin_class` is VARCHAR(128).
const MAX_CLASS_LEN: usize = 128;

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
    let dir = absolute(&req.dir)?;
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
        find_workspace_root(&dir)?
    };
    let member = workspace
        .as_ref()
        .map(|root| member_path(root, &crate_dir))
        .transpose()?;
    let api_dir = match (&req.api_path, &workspace) {
        (Some(p), _) => Some(api_checkout(p)?),
        (None, Some(root)) => workspace_api(root),
        (None, None) => None,
    };
    if let (Some(root), Some(member)) = (&workspace, &member) {
        check_unique_package(root, &req.name)?;
        // Fails here, before anything is written, if the manifest cannot be edited.
        add_member(&read(&root.join("Cargo.toml"))?, member)
            .map_err(|e| format!("{}: {e}", root.join("Cargo.toml").display()))?;
    }

    let mut api = InlineTable::new();
    match (&req.api_git, &api_dir) {
        (Some(git), _) => {
            api.insert("git", git.url.as_str().into());
            if let Some(tag) = &git.tag {
                api.insert("tag", tag.as_str().into());
            }
        }
        (None, Some(api_dir)) => {
            // Relative inside a workspace, so that the checkout can move; absolute for
            // a crate of its own, which lives wherever its author keeps it.
            let path = match &workspace {
                Some(root) if api_dir.starts_with(root) => relative_to(api_dir, &crate_dir),
                _ => api_dir.display().to_string(),
            };
            api.insert("path", path.into());
        }
        (None, None) => {}
    }
    api.insert("version", "1".into());
    // From the registry: the plain `"1"` a reader expects, not `{ version = "1" }`.
    let api_dependency = if api.len() == 1 {
        Value::from("1").to_string()
    } else {
        api.to_string()
    };
    api.insert("features", Array::from_iter(["testing"]).into());
    let api_dev_dependency = api.to_string();
    let lib_name = req.name.replace('-', "_");
    let lib_file = format!(
        "{}{lib_name}.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    );
    let in_workspace = workspace.is_some();
    let vars: Vec<(&str, String)> = vec![
        ("crate_name", req.name.clone()),
        ("class_name", req.class.clone()),
        ("type_name", type_name(&req.class)),
        ("api_dependency", api_dependency.clone()),
        ("api_dev_dependency", api_dev_dependency),
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
        ("lib_name", lib_name),
        ("lib_file", lib_file.clone()),
        (
            "package_flag",
            if in_workspace {
                format!(" -p {}", req.name)
            } else {
                String::new()
            },
        ),
        ("target_dir", "target".into()),
        (
            "build_where",
            if in_workspace {
                "From the workspace root:".into()
            } else {
                "In this directory:".into()
            },
        ),
    ];

    let written = write_crate(&crate_dir, &vars, !in_workspace);
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&crate_dir);
        return Err(e);
    }
    let workspace = match (workspace, member) {
        (Some(root), Some(member)) => {
            let manifest = root.join("Cargo.toml");
            // Read again just before writing: the manifest may have changed meanwhile.
            let edited = read(&manifest).and_then(|text| {
                add_member(&text, &member).map_err(|e| format!("{}: {e}", manifest.display()))
            });
            match edited.and_then(|text| {
                fs::write(&manifest, text)
                    .map_err(|e| format!("cannot write {}: {e}", manifest.display()))
            }) {
                Ok(()) => Some((manifest, member)),
                Err(e) => {
                    let _ = fs::remove_dir_all(&crate_dir);
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    Ok(Created {
        crate_dir,
        lib_file,
        workspace,
        api_dependency,
        class: req.class.clone(),
        name: req.name.clone(),
    })
}

fn write_crate(crate_dir: &Path, vars: &[(&str, String)], standalone: bool) -> Result<(), String> {
    let src = crate_dir.join("src");
    fs::create_dir_all(&src).map_err(|e| format!("cannot create {}: {e}", src.display()))?;
    let mut files = vec![
        (
            crate_dir.join("Cargo.toml"),
            format!("{}\n", render(CARGO_TOML, vars).trim_end()),
        ),
        (src.join("lib.rs"), render(LIB_RS, vars)),
        (crate_dir.join("README.md"), render(README, vars)),
    ];
    if standalone {
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

fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    debug_assert!(!out.contains("{{"), "unrendered placeholder in:\n{out}");
    out
}

/// Cargo's rules for a package name, plus what would clash in a target directory.
pub fn check_crate_name(name: &str) -> Result<(), String> {
    let fix = "use ASCII letters, digits, '-' and '_', starting with a letter, e.g. cnc-lathe";
    let Some(first) = name.chars().next() else {
        return Err(format!("the plugin name is empty; {fix}"));
    };
    if !first.is_ascii_alphabetic() {
        return Err(format!("plugin name {name:?} starts with {first:?}; {fix}"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!("plugin name {name:?} contains {bad:?}; {fix}"));
    }
    if name.len() > 64 {
        return Err(format!(
            "plugin name {name:?} is longer than 64 characters; {fix}"
        ));
    }
    let as_ident = name.replace('-', "_");
    if RUST_KEYWORDS.contains(&as_ident.as_str()) {
        return Err(format!(
            "plugin name {name:?} is a Rust keyword, which cannot name a library; {fix}"
        ));
    }
    if RESERVED.contains(&as_ident.as_str()) {
        return Err(format!(
            "plugin name {name:?} is taken by Rust, Cargo or this project; choose another, e.g. cnc-{name}"
        ));
    }
    Ok(())
}

/// A class name is what `cnc_classes.json` says and what `dead_letters.plugin_class`
/// stores; it also names the plugin's Rust type, so it is kept to identifier characters.
pub fn check_class_name(class: &str) -> Result<(), String> {
    let fix = "use ASCII letters, digits and '_', starting with a letter, e.g. CNCTypeC";
    let Some(first) = class.chars().next() else {
        return Err(format!("the class name (--class) is empty; {fix}"));
    };
    if !first.is_ascii_alphabetic() {
        return Err(format!("class name {class:?} starts with {first:?}; {fix}"));
    }
    if let Some(bad) = class
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!("class name {class:?} contains {bad:?}; {fix}"));
    }
    if class.len() > MAX_CLASS_LEN {
        return Err(format!(
            "class name {class:?} is longer than {MAX_CLASS_LEN} characters, the most dead_letters.plugin_class holds"
        ));
    }
    Ok(())
}

const RUST_KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Names of the standard library's crates, of directories in a target directory, and
/// of this project's crates.
const RESERVED: &[&str] = &[
    "std",
    "core",
    "alloc",
    "proc_macro",
    "test",
    "build",
    "deps",
    "examples",
    "incremental",
    "mes_plugin_api",
    "mes_collector",
];

/// The plugin's Rust type: the class name in UpperCamelCase (rustc warns about
/// underscores in type names), kept clear of the names the template imports.
fn type_name(class: &str) -> String {
    let mut name = String::with_capacity(class.len());
    for part in class.split('_').filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    const TAKEN: &[&str] = &[
        "Plugin",
        "Db",
        "Error",
        "Message",
        "Payload",
        "Deserialize",
        "Value",
        "Write",
        "RecordingDb",
        "Self",
        "Ok",
        "Err",
        "Some",
        "None",
        "Option",
        "Result",
        "String",
        "Vec",
        "Box",
    ];
    if TAKEN.contains(&name.as_str()) {
        name.push_str("Plugin");
    }
    name
}

/// `path` made absolute and free of `.` and `..`, whether or not it exists yet.
fn absolute(path: &Path) -> Result<PathBuf, String> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory: {e}"))?
            .join(path)
    };
    let mut clean = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    // Resolves symlinks in the part that exists, so that relative paths between this
    // and the workspace root come out right.
    let mut existing = clean.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_owned()),
            None => break,
        }
        existing.pop();
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    out.extend(rest.iter().rev());
    Ok(out)
}

/// The nearest directory at or above `dir` whose Cargo.toml has a `[workspace]` table:
/// the workspace Cargo would put a crate in `dir` into.
pub fn find_workspace_root(dir: &Path) -> Result<Option<PathBuf>, String> {
    for d in dir.ancestors() {
        let manifest = d.join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        let doc = parse_manifest(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
        if workspace_table(&doc).is_some() {
            return Ok(Some(d.to_path_buf()));
        }
    }
    Ok(None)
}

fn member_path(root: &Path, crate_dir: &Path) -> Result<String, String> {
    let rel = crate_dir.strip_prefix(root).map_err(|_| {
        format!(
            "{} is not below the workspace root {}",
            crate_dir.display(),
            root.display()
        )
    })?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Ok(parts.join("/"))
}

/// The workspace's own `mes-plugin-api`, if one of its members is it.
fn workspace_api(root: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(root.join("Cargo.toml")).ok()?;
    members(&text)
        .ok()?
        .into_iter()
        .map(|m| root.join(m))
        .find(|dir| package_name(dir).as_deref() == Some(API_PACKAGE))
}

fn api_checkout(path: &Path) -> Result<PathBuf, String> {
    let dir = absolute(path)?;
    match package_name(&dir) {
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

/// `name` of the `[package]` table of `dir/Cargo.toml`.
fn package_name(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let doc = parse_manifest(&text).ok()?;
    Some(doc.get("package")?.get("name")?.as_str()?.to_string())
}

/// Two packages of one name cannot share a workspace; say so before Cargo does.
fn check_unique_package(root: &Path, name: &str) -> Result<(), String> {
    let text = read(&root.join("Cargo.toml"))?;
    for member in members(&text).unwrap_or_default() {
        if member.contains('*') {
            continue;
        }
        if package_name(&root.join(&member)).as_deref() == Some(name) {
            return Err(format!(
                "the workspace {} already has a package named {name:?} ({member}); choose another name",
                root.display()
            ));
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `to` relative to `from`, with `/` separators.
fn relative_to(to: &Path, from: &Path) -> String {
    let to: Vec<Component> = to.components().collect();
    let from: Vec<Component> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return to.iter().collect::<PathBuf>().display().to_string();
    }
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

fn parse_manifest(text: &str) -> Result<DocumentMut, String> {
    text.parse().map_err(|e: toml_edit::TomlError| {
        format!(
            "not valid TOML; fix it, or pass --standalone to keep the new crate out of the workspace:\n{}",
            e.to_string().trim_end()
        )
    })
}

/// The `[workspace]` table. Cargo also makes a workspace of a manifest with only
/// `[workspace.package]` or dotted `workspace.` keys; such a manifest is left alone, and
/// the crate gets a `[workspace]` of its own, which builds, where editing would fail
/// for want of a `members` list.
fn workspace_table(doc: &DocumentMut) -> Option<&Table> {
    doc.get("workspace")?
        .as_table()
        .filter(|t| !t.is_implicit())
}

/// The `[workspace]` `members` of the manifest `text`; none when it has no such list.
fn members(text: &str) -> Result<Vec<String>, String> {
    let doc = parse_manifest(text)?;
    match workspace_table(&doc).and_then(|w| w.get("members")?.as_array()) {
        Some(list) => entries(list, "members"),
        None => Ok(Vec::new()),
    }
}

/// The strings of the list `key`.
fn entries(list: &Array, key: &str) -> Result<Vec<String>, String> {
    list.iter()
        .map(|v| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                let mut bare = v.clone();
                bare.decor_mut().clear();
                format!("{key} entry {bare} is not a string; write the member's path in quotes")
            })
        })
        .collect()
}

/// Whether a `members` entry (possibly `dir/*`) already covers `member`.
fn covers(entry: &str, member: &str) -> bool {
    if entry == member {
        return true;
    }
    match entry.strip_suffix("/*") {
        Some(parent) => member.rsplit_once('/').is_some_and(|(p, _)| p == parent),
        None => false,
    }
}

/// The manifest text with `member` added to `[workspace]` `members`, and to
/// `default-members` if the manifest has that list (otherwise Cargo builds every
/// member by default anyway). Only the lists change; the rest of the text is kept as is.
pub fn add_member(text: &str, member: &str) -> Result<String, String> {
    let mut doc = parse_manifest(text)?;
    let no_members = || {
        format!(
            "no `members = [...]` in its [workspace] table; add \"{member}\" there by hand or scaffold outside the workspace"
        )
    };
    let workspace = doc
        .get_mut("workspace")
        .and_then(Item::as_table_mut)
        .ok_or_else(no_members)?;
    if workspace.get("members").and_then(Item::as_array).is_none() {
        return Err(no_members());
    }
    for key in ["members", "default-members"] {
        let Some(list) = workspace.get_mut(key).and_then(Item::as_array_mut) else {
            continue;
        };
        if entries(list, key)?.iter().any(|e| covers(e, member)) {
            continue;
        }
        append(list, member);
    }
    Ok(line_endings_like(text, doc.to_string()))
}

/// Adds `member` laid out like the list: after the last entry on a one-line list; on
/// a line of its own, indented like the entries, on a list of one entry per line, the
/// comment after the last entry staying on that entry's line.
fn append(list: &mut Array, member: &str) {
    // Everything between the last entry (or its comma) and `]`: the new entry goes in it.
    let mut after_last = String::new();
    if !list.trailing_comma() {
        if let Some(last) = list.iter_mut().last() {
            after_last.push_str(raw(last.decor().suffix()));
            last.decor_mut().set_suffix("");
        }
    }
    after_last.push_str(raw(Some(list.trailing())));
    let one_line = !after_last.contains('\n')
        && list.iter().all(|v| {
            !raw(v.decor().prefix()).contains('\n') && !raw(v.decor().suffix()).contains('\n')
        });
    let prefix = if one_line {
        after_last.clear();
        if list.is_empty() { "" } else { " " }.to_string()
    } else {
        let indent = list
            .iter()
            .filter_map(|v| {
                raw(v.decor().prefix())
                    .rsplit_once('\n')
                    .map(|(_, i)| i.to_string())
            })
            .last()
            .unwrap_or_else(|| "    ".to_string());
        // A comment after the last entry stays on its line; one on lines of their own
        // before `]` stays above the new entry.
        let (before, closing) =
            after_last.split_at(after_last.rfind('\n').unwrap_or(after_last.len()));
        let prefix = format!("{before}\n{indent}");
        after_last = closing.to_string();
        prefix
    };
    let mut entry = Value::from(member);
    entry.decor_mut().set_prefix(prefix);
    entry.decor_mut().set_suffix("");
    list.set_trailing(after_last);
    list.set_trailing_comma(!one_line);
    list.push_formatted(entry);
}

fn raw(s: Option<&RawString>) -> &str {
    s.and_then(RawString::as_str).unwrap_or("")
}

/// toml_edit ends the lines it writes with `\n`, and the file with one; a manifest
/// written with `\r\n` throughout keeps them all, and one without a line break at its
/// end keeps that too.
fn line_endings_like(original: &str, edited: String) -> String {
    let lines = original.matches('\n').count();
    let mut edited = if lines > 0 && original.matches("\r\n").count() == lines {
        edited.replace("\r\n", "\n").replace('\n', "\r\n")
    } else {
        edited
    };
    if !original.ends_with('\n') && edited.ends_with('\n') {
        edited.pop();
        if edited.ends_with('\r') {
            edited.pop();
        }
    }
    edited
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
exclude = ["fuzz"]

[workspace.package]
edition = "2021"
members = "not this one"
"#;

    #[test]
    fn adds_to_both_lists_keeping_the_rest() {
        let out = add_member(ROOT, "plugins/lathe").unwrap();
        assert_eq!(
            out,
            ROOT.replace(
                "    \"host\", # the collector\n",
                "    \"host\", # the collector\n    \"plugins/lathe\",\n"
            )
            .replace(
                "default-members = [\"plugin-api\", \"host\"]",
                "default-members = [\"plugin-api\", \"host\", \"plugins/lathe\"]"
            )
        );
    }

    #[test]
    fn adds_a_comma_where_the_last_entry_has_none_and_skips_globs() {
        let text = "[workspace]\nmembers = [\n  \"a\"\n]\n";
        assert_eq!(
            add_member(text, "b").unwrap(),
            "[workspace]\nmembers = [\n  \"a\",\n  \"b\",\n]\n"
        );
        let globbed = "[workspace]\nmembers = [\"plugins/*\"]\n";
        assert_eq!(add_member(globbed, "plugins/x").unwrap(), globbed);
        assert_eq!(
            add_member("[workspace]\nmembers = []\n", "x").unwrap(),
            "[workspace]\nmembers = [\"x\"]\n"
        );
        assert!(add_member("[workspace]\nresolver = \"2\"\n", "x").is_err());
    }

    #[test]
    fn one_line_lists_stay_on_one_line() {
        for (list, edited) in [
            (r#"["a", "b"]"#, r#"["a", "b", "x"]"#),
            (r#"[ "a" ]"#, r#"[ "a", "x"]"#),
            (r#"["a",]"#, r#"["a", "x"]"#),
            ("[ ]", r#"["x"]"#),
        ] {
            assert_eq!(
                add_member(&format!("[workspace]\nmembers = {list} # all\n"), "x").unwrap(),
                format!("[workspace]\nmembers = {edited} # all\n")
            );
        }
    }

    #[test]
    fn comments_in_a_multi_line_list_stay_where_they_were() {
        let text = "[workspace]\nmembers = [\n  # Shipped.\n  \"a\", \"b\" # two\n  # Vendors' below.\n]\n";
        assert_eq!(
            add_member(text, "c").unwrap(),
            "[workspace]\nmembers = [\n  # Shipped.\n  \"a\", \"b\", # two\n  # Vendors' below.\n  \"c\",\n]\n"
        );
        assert_eq!(
            add_member("[workspace]\nmembers = [\n]\n", "x").unwrap(),
            "[workspace]\nmembers = [\n    \"x\",\n]\n"
        );
    }

    #[test]
    fn a_crate_already_a_member_is_not_added_again() {
        let text = "[workspace]\nmembers = [\"a\"]\ndefault-members = [\"a\"]\n";
        assert_eq!(add_member(text, "a").unwrap(), text);
        assert_eq!(
            add_member(
                "[workspace]\nmembers = [\"a\"]\ndefault-members = []\n",
                "a"
            )
            .unwrap(),
            "[workspace]\nmembers = [\"a\"]\ndefault-members = [\"a\"]\n"
        );
    }

    #[test]
    fn line_breaks_are_kept_as_the_manifest_has_them() {
        assert_eq!(
            add_member(
                "[workspace]\r\nmembers = [\r\n    \"a\", # c\r\n]\r\ndefault-members = [\"a\"]\r\n",
                "x"
            )
            .unwrap(),
            "[workspace]\r\nmembers = [\r\n    \"a\", # c\r\n    \"x\",\r\n]\r\ndefault-members = [\"a\", \"x\"]\r\n"
        );
        assert_eq!(
            add_member("[workspace]\nmembers = [\"a\"]", "x").unwrap(),
            "[workspace]\nmembers = [\"a\", \"x\"]"
        );
    }

    #[test]
    fn this_repositorys_manifest_gains_two_lines() {
        let text = include_str!("../../Cargo.toml");
        let out = add_member(text, "plugins/cnc-lathe").unwrap();
        let added = "    \"plugins/cnc-lathe\",\n";
        assert_eq!(out.matches(added).count(), 2, "{out}");
        assert_eq!(out.replace(added, ""), text);
    }

    #[test]
    fn a_manifest_that_cannot_be_edited_is_refused_saying_what_to_do() {
        for (text, says) in [
            (
                "[workspace\nmembers = []\n",
                "not valid TOML; fix it, or pass --standalone",
            ),
            ("[workspace]\nmembers = \"a\"\n", "add \"x\" there by hand"),
            (
                "[workspace]\nmembers = [\"a\", 3]\n",
                "members entry 3 is not a string",
            ),
            (
                "[workspace]\nmembers = [\"a\"]\ndefault-members = [{ a = 1 }]\n",
                "default-members entry { a = 1 } is not a string",
            ),
        ] {
            let e = add_member(text, "x").unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_workspace_root_is_the_nearest_manifest_with_a_workspace_table() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("plugins/new");
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(find_workspace_root(&dir).unwrap(), None);
        fs::write(root.path().join("Cargo.toml"), ROOT).unwrap();
        fs::write(
            root.path().join("plugins/Cargo.toml"),
            "[package]\nname = \"p\" # not a workspace\n\n[workspace.package]\nedition = \"2021\"\n",
        )
        .unwrap();
        assert_eq!(find_workspace_root(&dir).unwrap(), Some(root.path().into()));
        assert_eq!(
            package_name(&root.path().join("plugins")).as_deref(),
            Some("p")
        );
        fs::write(root.path().join("plugins/Cargo.toml"), "[package\n").unwrap();
        let e = find_workspace_root(&dir).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "{}: not valid TOML",
                root.path().join("plugins/Cargo.toml").display()
            )),
            "{e}"
        );
    }

    #[test]
    fn names_are_checked_like_cargo_does() {
        for ok in ["cnc-lathe", "a", "fanuc_31i", "CncX"] {
            check_crate_name(ok).unwrap();
        }
        for (bad, says) in [
            ("", "empty"),
            ("1lathe", "starts with '1'"),
            ("my lathe", "contains ' '"),
            ("tablé", "contains 'é'"),
            ("fn", "keyword"),
            ("test", "taken"),
            ("mes-plugin-api", "taken"),
        ] {
            let e = check_crate_name(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        check_class_name("CNCTypeC").unwrap();
        for bad in ["", "CNC-C", "9x", "A B"] {
            assert!(check_class_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_class_name(&"A".repeat(129)).is_err());
    }

    #[test]
    fn type_names_are_camel_case_and_clear_of_imports() {
        assert_eq!(type_name("CNCTypeC"), "CNCTypeC");
        assert_eq!(type_name("fanuc_31i"), "Fanuc31i");
        assert_eq!(type_name("Message"), "MessagePlugin");
    }

    #[test]
    fn relative_paths_walk_up_to_the_common_ancestor() {
        assert_eq!(
            relative_to(Path::new("/w/plugin-api"), Path::new("/w/plugins/lathe")),
            "../../plugin-api"
        );
    }

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
