//! The workspace a new crate joins: finding its root manifest as Cargo does, reading
//! its members, and adding the crate to its `members` (and `default-members`) with
//! toml_edit, which leaves the rest of the file as it was, comments and all.

use std::{
    fs,
    path::{Path, PathBuf},
};

use toml_edit::{Array, DocumentMut, Item, RawString, Table, Value};

/// The nearest directory at or above `dir` whose Cargo.toml has a `[workspace]` table:
/// the workspace Cargo would put a crate in `dir` into. A Cargo.toml on the way that is
/// not TOML is an error, as it is to Cargo: whether it is the root cannot be told.
pub(super) fn find_root(dir: &Path) -> Result<Option<PathBuf>, String> {
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

/// `crate_dir` as a `members` entry: relative to the root, with `/` between names.
pub(super) fn member_path(root: &Path, crate_dir: &Path) -> Result<String, String> {
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
pub(super) fn plugin_api(root: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(root.join("Cargo.toml")).ok()?;
    members(&text)
        .ok()?
        .into_iter()
        .map(|m| root.join(m))
        .find(|dir| package_name(dir).as_deref() == Some(super::API_PACKAGE))
}

/// `name` of the `[package]` table of `dir/Cargo.toml`.
pub(super) fn package_name(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let doc = parse_manifest(&text).ok()?;
    Some(doc.get("package")?.get("name")?.as_str()?.to_string())
}

/// Two packages of one name cannot share a workspace; say so before Cargo does.
pub(super) fn check_unique_package(root: &Path, name: &str) -> Result<(), String> {
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

/// The root manifest of the workspace at `root` with `member` added, or why it cannot
/// be, naming the file.
pub(super) fn edited_manifest(root: &Path, member: &str) -> Result<String, String> {
    let manifest = root.join("Cargo.toml");
    add_member(&read(&manifest)?, member).map_err(|e| format!("{}: {e}", manifest.display()))
}

/// Adds `member` to the root manifest of the workspace at `root`; the manifest's path.
pub(super) fn write_member(root: &Path, member: &str) -> Result<PathBuf, String> {
    let manifest = root.join("Cargo.toml");
    let text = edited_manifest(root, member)?;
    fs::write(&manifest, text).map_err(|e| format!("cannot write {}: {e}", manifest.display()))?;
    Ok(manifest)
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
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
fn add_member(text: &str, member: &str) -> Result<String, String> {
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
        let text = include_str!("../../../Cargo.toml");
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
        assert_eq!(find_root(&dir).unwrap(), None);
        fs::write(root.path().join("Cargo.toml"), ROOT).unwrap();
        fs::write(
            root.path().join("plugins/Cargo.toml"),
            "[package]\nname = \"p\" # not a workspace\n\n[workspace.package]\nedition = \"2021\"\n",
        )
        .unwrap();
        assert_eq!(find_root(&dir).unwrap(), Some(root.path().into()));
        assert_eq!(
            package_name(&root.path().join("plugins")).as_deref(),
            Some("p")
        );
        fs::write(root.path().join("plugins/Cargo.toml"), "[package\n").unwrap();
        let e = find_root(&dir).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "{}: not valid TOML",
                root.path().join("plugins/Cargo.toml").display()
            )),
            "{e}"
        );
    }
}
