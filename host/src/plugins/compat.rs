//! Why a library is refused, said for the person who has to fix it: what differs
//! from this host, and what to rebuild against.
//!
//! abi_stable 0.11.3 refuses a library whose `mes-plugin-api` has another major
//! version, or whose types reachable from the root module differ from the host's; its
//! own report is hundreds of lines of type layouts, so it goes to the debug log and the
//! refusal names the first difference. The host adds one rule abi_stable lacks: a root
//! module declaring a newer 1.x than `ROOT_MODULE_VERSION` is refused too, since no
//! released mes-plugin-api makes one (features after 1.0 are checked in `extensions`).

// `abi_checking` is `#[doc(hidden)]` in abi_stable 0.11.3 but public: it gives the
// layout report as data, where `LibraryError` only carries it as text.
use abi_stable::{
    abi_stability::abi_checking::{check_layout_compatibility, AbiInstability},
    library::{LibHeader, LibraryError, RootModule},
    sabi_types::{VersionNumber, VersionStrings},
    type_layout::{TLField, TLFieldOrFunction, TypeLayout},
    StableAbi,
};
use mes_plugin_api::PluginModuleRef;

/// The `mes-plugin-api` version this host was built against.
fn host_version() -> VersionNumber {
    VersionNumber::new(VersionStrings::new(mes_plugin_api::API_VERSION))
        .expect("mes-plugin-api's own version parses")
}

/// The root module version every 1.x plugin declares.
fn root_version() -> VersionNumber {
    VersionNumber::new(PluginModuleRef::VERSION_STRINGS).expect("a fixed version parses")
}

/// What to do about a plugin whose interface differs from the host's.
fn rebuild_advice() -> String {
    let host = host_version();
    format!(
        "rebuild the plugin against mes-plugin-api {}.x (this host has {host})",
        host.major
    )
}

/// The host's version rule, checked before abi_stable's layout check so that a
/// version problem is reported as one (the layouts of two major versions differ
/// anyway, in less useful terms).
///
/// abi_stable compares only major versions. Every released 1.x keeps the root module,
/// and the version it declares, at 1.0.0, so that a plugin's API minor version never
/// stops it loading into an older host: what a plugin needs of a newer host, it says in
/// its manifest (`extensions`). A root module declaring a newer 1.x comes from a
/// modified mes-plugin-api, whose layout may differ in ways the check cannot see.
pub(super) fn check_api_version(plugin: VersionStrings) -> Result<(), String> {
    let host = host_version();
    let root = root_version();
    // An unparsable version is abi_stable's to report.
    let Ok(built) = VersionNumber::new(plugin) else {
        return Ok(());
    };
    if built.major != host.major {
        return Err(format!(
            "built against mes-plugin-api {built}, another major version than this host's; {}",
            rebuild_advice()
        ));
    }
    if (built.minor, built.patch) > (root.minor, root.patch) {
        return Err(format!(
            "its root module declares mes-plugin-api {built}, but every released mes-plugin-api \
             {}.x declares {root} (this host has {host}), so it was built against a modified \
             copy; {}",
            host.major,
            rebuild_advice()
        ));
    }
    Ok(())
}

/// Explains an error of `lib_header_from_path` or `init_root_module`.
pub(super) fn explain(error: &LibraryError, header: Option<&LibHeader>) -> String {
    log::debug!("abi_stable's report: {error}");
    match error {
        LibraryError::OpenError { err, .. } => format!(
            "cannot be opened as a shared library ({err}); a plugin is the .{} that `cargo build` \
             makes of a plugin crate, for this machine's platform",
            std::env::consts::DLL_EXTENSION
        ),
        LibraryError::GetSymbolError { .. } => {
            "a shared library, but not a MES plugin: it exports \
             no plugin root module (a plugin crate exports one with \
             `mes_plugin_api::export_plugin!(YourType);`)"
                .to_string()
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => format!(
            "built against mes-plugin-api {actual_version}; {}",
            rebuild_advice()
        ),
        LibraryError::InvalidAbiHeader(found) => format!(
            "built with abi_stable {}.{}, which cannot be loaded by this host's abi_stable; {}",
            found.abi_major,
            found.abi_minor,
            rebuild_advice()
        ),
        LibraryError::AbiInstability(_) => {
            let built = header
                .map(|h| h.version_strings().to_string())
                .unwrap_or_else(|| "?".into());
            let what = header
                .and_then(|h| h.layout())
                .and_then(first_difference)
                .unwrap_or_else(|| "its types differ from this host's".into());
            format!(
                "built against a mes-plugin-api {built} whose interface differs from this host's: \
                 {what}; {}",
                rebuild_advice()
            )
        }
        LibraryError::RootModule { err, .. } => {
            format!(
                "its root module failed to initialize: {}",
                one_line(&err.to_string())
            )
        }
        other => one_line(&other.to_string()),
    }
}

/// The first difference between the host's root module and the library's, as "in
/// `Type.field`, the plugin has ... where this host has ...", or `None` if the layouts
/// check out here.
fn first_difference(found: &'static TypeLayout) -> Option<String> {
    let report = check_layout_compatibility(<PluginModuleRef as StableAbi>::LAYOUT, found).err()?;
    // Errors of nested types come before those of the types containing them, so the
    // first non-empty one is the innermost difference.
    let first = report.errors.iter().find(|e| !e.errs.is_empty())?;
    let place: Vec<String> = first
        .stack_trace
        .iter()
        .map(|step| match &step.expected {
            TLFieldOrFunction::Field(f) if f.name().parse::<usize>().is_ok() => {
                f.layout().name().to_string()
            }
            TLFieldOrFunction::Field(f) => f.name().to_string(),
            TLFieldOrFunction::Function(f) => f.name.to_string(),
        })
        .collect();
    // The most specific difference first: a field's name or type says more than a count.
    let mut diffs: Vec<(u8, String)> = first.errs.iter().map(describe).collect();
    diffs.sort_by_key(|(rank, _)| *rank);
    let (_, what) = diffs.first()?;
    let more = match diffs.len() - 1 {
        0 => String::new(),
        1 => " (and 1 more difference)".into(),
        n => format!(" (and {n} more differences)"),
    };
    let place = if place.is_empty() {
        String::new()
    } else {
        format!("in `{}`, ", place.join("."))
    };
    Some(format!("{place}{what}{more}"))
}

/// One difference in words, with a rank: lower is more specific.
fn describe(e: &AbiInstability) -> (u8, String) {
    use AbiInstability as A;
    match e {
        A::UnexpectedField(d) => (
            0,
            format!(
                "the plugin has field `{}` where this host has `{}`",
                field(&d.found),
                field(&d.expected)
            ),
        ),
        A::Name(d) => (
            0,
            format!(
                "the plugin has type `{}` where this host has `{}`",
                d.found, d.expected
            ),
        ),
        A::MismatchedPrimitive(d) => (
            0,
            format!(
                "the plugin has `{:?}` where this host has `{:?}`",
                d.found, d.expected
            ),
        ),
        A::UnexpectedVariant(d) => (
            0,
            format!(
                "the plugin has variant `{}` where this host has `{}`",
                d.found, d.expected
            ),
        ),
        A::FieldCountMismatch(d) => (
            1,
            format!(
                "the plugin has {} fields where this host has {}",
                d.found, d.expected
            ),
        ),
        A::MismatchedPrefixSize(d) => (
            1,
            format!(
                "the plugin has {} fields before the first optional one where this host has {}",
                d.found, d.expected
            ),
        ),
        A::TooManyVariants(d) => (
            1,
            format!(
                "the plugin has {} variants where this host has {}",
                d.found, d.expected
            ),
        ),
        A::Size(d) => (
            2,
            format!(
                "the plugin's type is {} bytes where this host's is {}",
                d.found, d.expected
            ),
        ),
        A::Alignment(d) => (
            2,
            format!(
                "the plugin's type is aligned to {} where this host's is to {}",
                d.found, d.expected
            ),
        ),
        A::PackageVersion(d) => (
            2,
            format!(
                "the plugin's type comes from version {} where this host's is from {}",
                d.found, d.expected
            ),
        ),
        A::Package(d) => (
            2,
            format!(
                "the plugin's type comes from package `{}` where this host's is from `{}`",
                d.found, d.expected
            ),
        ),
        other => (3, format!("a different layout ({})", variant_name(other))),
    }
}

/// `name: Type`, as in the source.
fn field(f: &TLField) -> String {
    let ty = f.layout().full_type().to_string();
    // abi_stable names every function pointer type alike.
    let ty = if ty == "AFunctionPointer" {
        "extern \"C\" fn(..)".to_string()
    } else {
        ty
    };
    format!("{}: {ty}", f.name())
}

/// The variant's name alone: the Debug form of the rest includes whole type layouts.
fn variant_name(e: &AbiInstability) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}

fn one_line(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(600) {
        Some((i, _)) => format!("{}...", &flat[..i]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frozen_root_version_passes_and_a_newer_root_or_other_major_is_refused() {
        let host = host_version();
        let v = |s: String| VersionStrings::new(Box::leak(s.into_boxed_str()));
        assert!(check_api_version(v(format!("{}.0.0", host.major))).is_ok());
        assert!(check_api_version(PluginModuleRef::VERSION_STRINGS).is_ok());
        let newer =
            check_api_version(v(format!("{}.{}.0", host.major, host.minor + 1))).unwrap_err();
        assert!(newer.contains("built against a modified copy"), "{newer}");
        let other = check_api_version(v(format!("{}.0.0", host.major + 1))).unwrap_err();
        assert!(
            other.contains(&format!(
                "mes-plugin-api {}.x (this host has {host})",
                host.major
            )),
            "{other}"
        );
    }
}
