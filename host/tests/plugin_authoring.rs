//! Writing a plugin, end to end: a scaffolded plugin builds, loads and stores rows;
//! recorded messages replay through each shipped plugin as the collector would run
//! them; plugins built against an incompatible interface are refused with what to
//! rebuild against; a plugin refusing a machine's settings fails `check`.
//!
//! Two tests run `cargo build` on crates outside the workspace (the scaffolded plugin,
//! the fixture in test-plugins/incompatible-api), each into a target directory of its
//! own under the workspace's, so that the first run compiles their dependencies once
//! (about a minute) and later runs reuse them.

mod common;

use std::{
    fs,
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::{build::*, *};

const WAIT: Duration = Duration::from_secs(30);

/// `mes-collector check` on the setup: (passed, stdout and stderr); common's `check`,
/// which this one hides, gives stdout alone.
fn check(setup: &Setup) -> (bool, String) {
    let out = mes_collector(&["check", "--config-dir", setup.path().to_str().unwrap()])
        .output()
        .unwrap();
    (out.status.success(), text(&out))
}

#[test]
fn a_scaffolded_plugin_builds_loads_and_stores_a_row() {
    let started = Instant::now();
    // Outside any workspace, so the crate stands alone, as a plant's own would.
    let dir = tempfile::tempdir().unwrap();
    let api = workspace_root().join("plugin-api");
    let out = run_ok(mes_collector(&[
        "new-plugin",
        "scaffolded-lathe",
        "--class",
        "ScaffoldedLathe",
        "--dir",
        dir.path().to_str().unwrap(),
        "--api-path",
        api.to_str().unwrap(),
    ]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("cargo build --release"), "{said}");
    assert!(!said.contains("workspace members"), "{said}");
    let crate_dir = dir.path().join("scaffolded-lathe");
    let manifest = fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("[profile.release]") && manifest.contains("panic = \"unwind\""),
        "{manifest}"
    );
    assert!(
        manifest.contains(&format!(
            "path = \"{}\"",
            api.canonicalize().unwrap().display()
        )),
        "{manifest}"
    );
    let readme = fs::read_to_string(crate_dir.join("README.md")).unwrap();
    for needle in [
        "`ScaffoldedLathe`",
        "`status`",
        "`cnc_data`",
        "`cnc_status`",
    ] {
        assert!(
            readme.contains(needle),
            "{needle} missing from README:\n{readme}"
        );
    }
    let again = mes_collector(&[
        "new-plugin",
        "scaffolded-lathe",
        "--class",
        "ScaffoldedLathe",
        "--dir",
        dir.path().to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));

    // The workspace's lock file: the same dependency versions, already downloaded.
    fs::copy(
        workspace_root().join("Cargo.lock"),
        crate_dir.join("Cargo.lock"),
    )
    .unwrap();
    let target = workspace_target().join("scaffold-test");
    let manifest_path = crate_dir.join("Cargo.toml");
    // `cargo <command> --manifest-path .. --target-dir .. <rest>`
    let cargo_in = |command: &str, rest: &[&str]| {
        let mut cmd = cargo();
        cmd.arg(command)
            .arg("--manifest-path")
            .arg(&manifest_path)
            .arg("--target-dir")
            .arg(&target)
            .args(rest);
        cmd
    };
    run_ok(
        cargo()
            .args(["fmt", "--manifest-path"])
            .arg(&manifest_path)
            .args(["--", "--check"]),
    );
    let tested = run_ok(cargo_in("test", &[]));
    assert!(
        String::from_utf8_lossy(&tested.stdout).contains("3 passed"),
        "{}",
        text(&tested)
    );
    run_ok(cargo_in("build", &[]));
    run_ok(cargo_in(
        "clippy",
        &["--all-targets", "--", "-D", "warnings"],
    ));
    let built = started.elapsed();
    let lib = lib_in(&target.join("debug"), "scaffolded-lathe");

    let db = TestDb::new("scaffold");
    let setup = Setup::new(
        &db,
        "scaffold",
        &classes(&[("LATHE01", "ScaffoldedLathe")]),
        &[],
    );
    setup.install_lib(&lib);
    let (ok, report) = check(&setup);
    assert!(ok, "{report}");
    for needle in ["libscaffolded_lathe.so", "ScaffoldedLathe", "LATHE01"] {
        assert!(report.contains(needle), "{needle} missing:\n{report}");
    }
    let collector = Collector::start(&setup);
    setup.publish(&[br#"{"cnc_id":"LATHE01","part_program":"p7","timestamp":"1747379100","payload":{"status":"running","spin":1200,"feed_rate":80.5}}"#]);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 1, WAIT),
        1,
        "{}",
        collector.log()
    );
    let status: Vec<(String, String, f64, Option<f64>, i64)> =
        db.rows("SELECT cnc_id, status, spin, feed_rate, timestamp FROM cnc_status");
    assert_eq!(
        status,
        vec![(
            "LATHE01".into(),
            "running".into(),
            1200.0,
            Some(80.5),
            1747379100
        )]
    );
    eprintln!(
        "scaffold: built, tested and linted in {:.1} s; stored a row {:.1} s after start",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_standalone_plugin_builds_against_a_tagged_api_from_git_and_stores_rows() {
    let started = Instant::now();
    // A vendor's view of the collector: its repository, tagged at a plugin API release
    // (a clone of this checkout's history; in a plant, the collector's repository or
    // a mirror of it).
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("mes-collector.git");
    run_ok(
        Command::new("git")
            .args(["clone", "--quiet", "--bare"])
            .arg(workspace_root())
            .arg(&repo),
    );
    let tag = format!("mes-plugin-api-v{}", mes_plugin_api::API_VERSION);
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["tag", &tag, "HEAD"]),
    );
    // Inside this workspace on purpose: --standalone keeps it out of it.
    let dir = workspace_target()
        .join("standalone-test")
        .join(unique("vendor"));
    fs::create_dir_all(&dir).unwrap();
    let url = format!("file://{}", repo.display());
    let out = run_ok(mes_collector(&[
        "new-plugin",
        "vendor-lathe",
        "--class",
        "VendorLathe",
        "--dir",
        dir.to_str().unwrap(),
        "--standalone",
        "--api-git",
        &url,
        "--api-tag",
        &tag,
    ]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("workspace members"), "{said}");
    assert!(
        !fs::read_to_string(workspace_root().join("Cargo.toml"))
            .unwrap()
            .contains("vendor-lathe"),
        "the enclosing workspace was edited"
    );
    let crate_dir = dir.join("vendor-lathe");
    fs::copy(
        workspace_root().join("Cargo.lock"),
        crate_dir.join("Cargo.lock"),
    )
    .unwrap();
    let target = workspace_target().join("scaffold-test");
    let manifest_path = crate_dir.join("Cargo.toml");
    for command in ["test", "build"] {
        run_ok(
            cargo()
                .arg(command)
                .arg("--manifest-path")
                .arg(&manifest_path)
                .arg("--target-dir")
                .arg(&target),
        );
    }
    let lock = fs::read_to_string(crate_dir.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains(&format!("git+{url}?tag={tag}#")),
        "mes-plugin-api not taken from the tag:\n{lock}"
    );
    let built = started.elapsed();
    let lib = lib_in(&target.join("debug"), "vendor-lathe");

    let db = TestDb::new("standalone");
    let setup = Setup::new(
        &db,
        "standalone",
        &classes(&[("VLATHE01", "VendorLathe")]),
        &[],
    );
    setup.install_lib(&lib);
    let collector = Collector::start(&setup);
    setup.publish(&[br#"{"cnc_id":"VLATHE01","part_program":"p1","timestamp":"1747379200","payload":{"status":"idle","spin":0}}"#]);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_status", 1, WAIT),
        1,
        "{}",
        collector.log()
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM cnc_data"), 1);
    let _ = fs::remove_dir_all(&dir);
    eprintln!(
        "standalone plugin: built from the git tag in {:.1} s; stored a row {:.1} s after start",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The payload object of a sample message, as the plugin is handed it.
fn payload_of(sample: &str) -> &str {
    let at = sample.find("\"payload\":").unwrap() + "\"payload\":".len();
    &sample[at..sample.len() - 1]
}

#[test]
fn recorded_messages_replay_through_each_shipped_plugin_as_the_writes_it_would_make() {
    let dir = tempfile::tempdir().unwrap();
    // Recorded as `cnc-sim record` would from a live topic.
    let file = dir.path().join("recorded.jsonl");
    let summary = record(&SAMPLES, &file);
    assert!(
        summary.contains("recorded 3 messages") && summary.contains("0 skipped"),
        "{summary}"
    );
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        SAMPLES.map(|s| format!("{s}\n")).concat()
    );
    let data = |i: usize, id: &str, program: &str, ts: i64| {
        format!(
            "INSERT cnc_data (cnc_id, part_program, timestamp, json_data) VALUES ('{id}', '{program}', {ts}, json'{}')",
            payload_of(SAMPLES[i])
        )
    };
    let rows = [
        ("CNC001", "program_01", 1747379028, "running", "200.0"),
        ("CNC002", "program_02", 1747379030, "idle", "0.0"),
        ("CNC001", "program_03", 1747379035, "error", "100.0"),
    ];
    for (crate_name, status_columns, extra) in [
        (
            "cnc-type-a",
            "cnc_id, status, spin, part_program, timestamp",
            "",
        ),
        (
            "cnc-type-b",
            "cnc_id, status, spin, feed_rate, part_count, part_program, timestamp",
            "NULL, NULL, ",
        ),
    ] {
        let out = run_ok(mes_collector(&[
            "replay",
            "--plugin",
            plugin_lib(crate_name).to_str().unwrap(),
            "--cnc-id",
            "CNC001",
            "--cnc-id",
            "CNC002",
            file.to_str().unwrap(),
        ]));
        let mut want = String::new();
        for (i, (id, program, ts, status, spin)) in rows.iter().enumerate() {
            want.push_str(&data(i, id, program, *ts));
            want.push('\n');
            want.push_str(&format!(
                "UPSERT NEWEST BY (timestamp) cnc_status ({status_columns}) VALUES ('{id}', '{status}', {spin}, {extra}'{program}', {ts})\n"
            ));
        }
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{crate_name}");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("3 messages: 3 would be stored (6 writes), 0 dead letters"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn replay_gives_the_collectors_dead_letters_and_writes_through_its_sink() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.jsonl");
    let lines = [
        SAMPLES[0],
        "this is not json",
        r#"{"cnc_id":"CNC404","part_program":"p","timestamp":1,"payload":{}}"#,
        "",
        r#"{"cnc_id":"CNC001","part_program":"p","timestamp":1,"payload":{"status":"idle"}}"#,
        SAMPLES[2],
    ];
    fs::write(&file, lines.join("\n")).unwrap();
    let type_a = plugin_lib("cnc-type-a");
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--plugin",
            type_a.to_str().unwrap(),
            "--cnc-id",
            "CNC001",
        ];
        args.extend_from_slice(extra);
        args.push(file.to_str().unwrap());
        mes_collector(&args).output().unwrap()
    };

    let out = replay(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dead: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("DEAD LETTER"))
        .collect();
    assert_eq!(dead.len(), 3, "{stdout}");
    assert!(
        dead[0].starts_with("DEAD LETTER line 2 (not_json)"),
        "{stdout}"
    );
    assert!(
        dead[1].starts_with("DEAD LETTER line 3 (unknown_cnc_id) cnc_id=CNC404"),
        "{stdout}"
    );
    assert!(
        dead[2]
            .starts_with("DEAD LETTER line 5 (plugin_error) cnc_id=CNC001 plugin=CNCTypeA 1.0.0")
            && dead[2].contains("spin"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("INSERT")).count(),
        2
    );

    // --write: the same messages committed by the collector's sink.
    let db = TestDb::new("replay");
    let setup = Setup::new(&db, "replay", "[]", &[]);
    let out = replay(&["--write", "--config-dir", setup.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "5 messages: 2 stored (4 writes), 3 dead letters (in the dead_letters table)"
        ),
        "{}",
        text(&out)
    );
    let data: Vec<(String, String)> =
        db.rows("SELECT cnc_id, part_program FROM cnc_data ORDER BY id");
    assert_eq!(
        data,
        vec![
            ("CNC001".into(), "program_01".into()),
            ("CNC001".into(), "program_03".into())
        ]
    );
    let reasons: Vec<String> = db.rows("SELECT reason FROM dead_letters ORDER BY id");
    assert_eq!(reasons, ["not_json", "unknown_cnc_id", "plugin_error"]);
    assert_eq!(db.count("SELECT COUNT(*) FROM collector_position"), 0);

    // What only the database can refuse, and a plugin's panic, through the faulty plugin.
    let faulty = dir.path().join("faulty.jsonl");
    let action = |a: &str| {
        format!(
            r#"{{"cnc_id":"CNCF","part_program":"p","timestamp":1,"payload":{{"action":"{a}"}}}}"#
        )
    };
    fs::write(
        &faulty,
        [action("store"), action("bad_sql"), action("panic")].join("\n"),
    )
    .unwrap();
    let out = mes_collector(&[
        "replay",
        "--plugin",
        plugin_lib("faulty-plugin").to_str().unwrap(),
        "--cnc-id",
        "CNCF",
        "--write",
        "--config-dir",
        setup.path().to_str().unwrap(),
        faulty.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("line 2 (db_rejected) cnc_id=CNCF plugin=FaultyTest")
            && said.contains("line 3 (plugin_panic)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM cnc_data WHERE cnc_id = 'CNCF'"),
        1
    );

    // Settings as the collector hands them to the plugin's constructor.
    let out = mes_collector(&[
        "replay",
        "--plugin",
        plugin_lib("faulty-plugin").to_str().unwrap(),
        "--cnc-id",
        "CNCF",
        "--settings",
        r#"{"bad": true}"#,
        faulty.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.matches("(plugin_init)").count(), 3, "{}", text(&out));
    assert!(said.contains("settings key `bad`"), "{said}");
}

/// The fixture plugin built against each variant of the fixture interface, and the
/// fixture host built against the 1.1.0 variant.
struct Fixtures {
    layout: PathBuf,
    major: PathBuf,
    minor: PathBuf,
    newer_host: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static BUILT: OnceLock<Fixtures> = OnceLock::new();
    BUILT.get_or_init(|| {
        let started = Instant::now();
        let manifest = workspace_root().join("test-plugins/incompatible-api/Cargo.toml");
        let target = workspace_target().join("compat-fixture");
        let out_dir = target.join("variants");
        fs::create_dir_all(&out_dir).unwrap();
        let build = |package: &str, features: Option<&str>| {
            let mut args = vec!["-p", package];
            if let Some(f) = features {
                args.extend(["--features", f]);
            }
            cargo_build(&manifest, &target, &args);
        };
        let lib = target.join("debug").join(format!(
            "{}incompatible_plugin.{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_EXTENSION
        ));
        // One library file per build: each variant is copied away before the next.
        let variant = |features: Option<&str>, name: &str| {
            build("incompatible-plugin", features);
            let to = out_dir.join(format!("lib{name}.{}", std::env::consts::DLL_EXTENSION));
            fs::copy(&lib, &to).unwrap();
            to
        };
        let layout = variant(None, "incompatible_layout");
        let major = variant(Some("major-2"), "incompatible_major");
        let minor = variant(Some("minor-append"), "incompatible_minor");
        build("newer-host", None);
        eprintln!(
            "compat fixtures built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Fixtures {
            layout,
            major,
            minor,
            newer_host: target.join("debug/newer-host"),
        }
    })
}

#[test]
fn plugins_built_against_an_incompatible_interface_are_refused_saying_what_to_rebuild() {
    let fx = fixtures();
    let db = TestDb::new("compat");
    let setup = Setup::cnc001_type_a(&db, "compat");
    for lib in [&fx.layout, &fx.major, &fx.minor] {
        fs::copy(lib, setup.plugins_dir().join(lib.file_name().unwrap())).unwrap();
    }
    let (ok, report) = check(&setup);
    assert!(!ok, "{report}");
    let host = mes_plugin_api::API_VERSION;
    let rebuild = format!("rebuild the plugin against mes-plugin-api 1.x (this host has {host})");
    let problem = |file: &str| {
        let prefix = format!(
            "plugin {} not loaded: ",
            setup.plugins_dir().join(file).display()
        );
        report
            .lines()
            .find_map(|l| l.trim_start_matches("  - ").strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no problem line for {file}:\n{report}"))
            .to_string()
    };
    let layout = problem("libincompatible_layout.so");
    assert!(
        layout.contains("whose interface differs from this host's")
            && layout.contains(
                "in `PluginModule`, the plugin has field `vendor: RStr<'a>` where this host has `new: extern \"C\" fn(..)`"
            )
            && layout.ends_with(&rebuild),
        "{layout}"
    );
    let major = problem("libincompatible_major.so");
    assert!(
        major.starts_with("built against mes-plugin-api 2.0.0, another major version")
            && major.ends_with(&rebuild),
        "{major}"
    );
    // A root module that grew in a "1.1.0": no released mes-plugin-api makes one (1.x
    // keeps the root module at 1.0.0; see test-plugins/api-versions).
    let minor = problem("libincompatible_minor.so");
    assert!(
        minor.starts_with(&format!(
            "its root module declares mes-plugin-api 1.1.0, but every released mes-plugin-api \
             1.x declares 1.0.0 (this host has {host}), so it was built against a modified copy"
        )) && minor.ends_with(&rebuild),
        "{minor}"
    );
    assert_eq!(report.matches("REFUSED: ").count(), 3, "{report}");
    assert!(report.contains("libcnc_type_a.so"), "{report}");

    // replay loads through the same loader.
    let refused = mes_collector(&[
        "replay",
        "--plugin",
        fx.layout.to_str().unwrap(),
        "--cnc-id",
        "CNC001",
        "/dev/null",
    ])
    .output()
    .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&fx.layout.display().to_string()) && said.contains(&rebuild),
        "{said}"
    );

    // Why a minor release cannot append to the root module: a host whose module has a
    // field more refuses every plugin built before (abi_stable: "too many fields"),
    // while a plugin with the field more loads into it.
    let out = run_ok(
        Command::new(&fx.newer_host)
            .arg(plugin_lib("cnc-type-a"))
            .arg(&fx.minor),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("libcnc_type_a.so: refused") && said.contains("too many fields"),
        "{said}"
    );
    assert!(
        said.contains("libincompatible_minor.so: loaded IncompatibleTest"),
        "{said}"
    );
}

#[test]
fn check_names_the_machine_the_plugin_and_the_reason_when_settings_are_refused() {
    let db = TestDb::new("settings");
    let setup = Setup::new(
        &db,
        "settings",
        &serde_json::json!([
            {"cnc_id": "CNCF-BAD", "class_name": "FaultyTest", "settings": {"bad": true}},
            {"cnc_id": "CNCF-OK", "class_name": "FaultyTest", "settings": {"bad": false}},
        ])
        .to_string(),
        &["faulty-plugin"],
    );
    let (ok, report) = check(&setup);
    assert!(!ok, "{report}");
    let problems: Vec<&str> = report.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(
        problems[0].contains("plugin FaultyTest")
            && problems[0].contains("\"CNCF-BAD\"")
            && problems[0].contains("settings key `bad` is true"),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.contains("CNCF-OK") && l.contains("libfaulty_plugin.so")),
        "{report}"
    );
}
