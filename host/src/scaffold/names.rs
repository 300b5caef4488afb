//! What a plugin crate and its class may be called, and the Rust type the class makes.

/// `dead_letters.plugin_class` is VARCHAR(128).
const MAX_CLASS_LEN: usize = 128;

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
pub(super) fn type_name(class: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
