//! The pure parts: parsing, checking, applying and the starter generator.

use mes_plugin_api::{
    testing::{RecordingDb, Write as W},
    Message, Plugin, Value,
};
use serde_json::json;

use crate::{load, starter::starter, EngineSettings, Machine, Mapping};

const TYPE_A: &str = include_str!("../../plugins/cnc-mapping/examples/CNCTypeA.json");
const LATHE: &str = include_str!("../../plugins/cnc-mapping/examples/Lathe.json");

fn mapping(text: &str) -> Mapping {
    load(text, "mapping T.json (class T)", Machine::Settings(None))
        .unwrap_or_else(|e| panic!("{}", e.join("\n")))
}

fn errors(text: &str) -> Vec<String> {
    load(text, "mapping T.json (class T)", Machine::Any).expect_err("refused")
}

fn run(m: &Mapping, payload: &str) -> (Result<(), String>, Vec<W>) {
    let mut db = RecordingDb::new();
    let msg = Message::new("sensor/CNC", "CNC001", "program_01", 1747379028, payload);
    let r = db
        .with_db(|db| m.apply(&msg, db))
        .map_err(|e| e.message().to_string());
    (r, db.writes().to_vec())
}

#[test]
fn type_a_as_a_mapping_writes_what_the_compiled_plugin_writes() {
    let m = mapping(TYPE_A);
    let payloads = [
        r#"{"status": "running","spin":200,"X-Axis":30,"Y-Axis":80}"#,
        r#"{"status":"idle","spin":0.5,"X-Axis":-1e3,"Y-Axis":0,"extra":{"k":[1,2]},"seq":7}"#,
        r#"{ "spin" : 12 , "status" : "caf\u00e9 \"q\"", "X-Axis":1,"Y-Axis":2 }"#,
        // Refused by both: missing, null or mistyped keys.
        r#"{"status":"idle","X-Axis":0,"Y-Axis":0}"#,
        r#"{"status":"idle","spin":"fast","X-Axis":0,"Y-Axis":0}"#,
        r#"{"status":null,"spin":1,"X-Axis":0,"Y-Axis":0}"#,
        r#"{"status":5,"spin":1,"X-Axis":0,"Y-Axis":0}"#,
        r#"{"status":"idle","spin":1,"Y-Axis":0}"#,
        r#"{"status":"idle","spin":1,"X-Axis":"0","Y-Axis":0}"#,
    ];
    for p in payloads {
        let mut db = RecordingDb::new();
        let msg = Message::new("sensor/CNC", "CNC001", "program_01", 1747379028, p);
        let mut a = cnc_type_a::CncTypeA::new("CNC001", None).unwrap();
        let compiled = db.handle(&mut a, &msg);
        let (mapped, writes) = run(&m, p);
        assert_eq!(
            compiled.is_ok(),
            mapped.is_ok(),
            "{p}: {compiled:?} vs {mapped:?}"
        );
        if compiled.is_ok() {
            assert_eq!(db.writes(), &writes[..], "{p}");
        } else {
            assert!(writes.is_empty(), "{p}");
        }
    }
}

#[test]
fn a_misspelt_type_names_the_json_path_and_the_choices() {
    let text = TYPE_A.replace(r#""type": "float"}"#, r#""type": "flaot"}"#);
    assert_eq!(
        errors(&text),
        [
            r#"rows[1].columns.spin.type: unknown type "flaot"; expected one of text, integer, float, boolean, json"#
        ]
    );
}

#[test]
fn unknown_keys_and_wrong_json_types_are_refused_with_their_path() {
    let e = errors(r#"{"rows":[{"table":"t","columns":{"a":{"pointr":"/a","type":"text"}}}]}"#);
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("rows[0].columns.a"), "{e:?}");
    assert!(e[0].contains("unknown field `pointr`"), "{e:?}");
    let e = errors(r#"{"rows":[{"table":"t","columns":{"a":{"envelope":"cnc_id"}}}],"colums":1}"#);
    assert!(e[0].contains("unknown field `colums`"), "{e:?}");
    let e = errors(r#"{"rows":[{"table":"t","columns":{"a":{"pointer":5,"type":"text"}}}]}"#);
    assert!(
        e[0].starts_with("rows[0].columns.a.pointer: invalid type: integer `5`"),
        "{e:?}"
    );
    let e = errors(r#"{"rows":[{"table":"t"}]}"#);
    assert!(e[0].contains("missing field `columns`"), "{e:?}");
}

#[test]
fn every_mistake_of_a_file_is_reported_at_once() {
    let e = errors(
        r#"{"rows":[
        {"table":"bad-name","write":"merge","columns":{
            "a":{"pointer":"spin","type":"float"},
            "b":{"pointer":"/x~2","type":"integer"},
            "c":{"envelope":"machine"},
            "d":{"pointer":"/d"},
            "e":{"pointer":"/e","type":"integer","scale":0.1},
            "f":{"pointer":"/f","envelope":"cnc_id","type":"text"},
            "g":{"pointer":"/g","type":"integer","map":{"0":"idle"}},
            "h":{"pointer":"/h","type":"text","missing":"default"}
        }},
        {"table":"t","write":"upsert_newest","columns":{"a":{"envelope":"cnc_id"}}},
        {"table":"t","for_each":"","order_by":["a"],"columns":{"a":{"const":1}}}
    ]}"#,
    );
    let want = [
        "rows[0].table: identifier \"bad-name\" contains '-'",
        "rows[0].write: unknown write \"merge\"; expected one of insert, upsert, upsert_newest",
        "rows[0].columns.a.pointer: JSON pointer \"spin\" must start with '/'",
        "rows[0].columns.b.pointer: JSON pointer \"/x~2\": '~' must be followed by 0",
        "rows[0].columns.c.envelope: unknown envelope field \"machine\"",
        "rows[0].columns.d.type: a value read with \"pointer\" needs a type",
        "rows[0].columns.e.scale: a scaled value is a float",
        "rows[0].columns.f: give exactly one source (pointer, envelope, setting or const); found pointer and envelope",
        "rows[0].columns.g.map.0: expected an integer, found text \"idle\"",
        "rows[0].columns.h.missing: \"default\" needs \"default\"",
        "rows[1].order_by: upsert_newest needs order_by",
        "rows[2].order_by: only an upsert_newest row has order_by",
        "rows[2].for_each: the payload is an object, not an array",
    ];
    for w in want {
        assert!(
            e.iter().any(|x| x.starts_with(w)),
            "{w:?} not in:\n{}",
            e.join("\n")
        );
    }
    assert_eq!(e.len(), want.len(), "{}", e.join("\n"));
}

#[test]
fn nested_values_status_codes_scales_arrays_and_settings_become_rows() {
    let spec = crate::spec::parse(LATHE).unwrap();
    let settings = json!({"line": "L2"});
    let m = Mapping::compile(&spec, "Lathe", Machine::Settings(Some(&settings))).unwrap();
    let payload = r#"{"ctrl":{"state":1},"spindle":{"rpm":1200},"pos":{"x_um":12345},
        "tools":[{"slot":1,"wear_um":25},{"slot":7,"wear_um":3.5}]}"#;
    let (r, writes) = run(&m, payload);
    r.unwrap();
    assert_eq!(writes.len(), 4, "{writes:?}");
    match &writes[1] {
        W::UpsertNewest {
            table,
            values,
            order_by,
            ..
        } => {
            assert_eq!(table, "lathe_status");
            assert_eq!(order_by, &["timestamp".to_string()]);
            assert_eq!(
                values,
                &[
                    Value::from("CNC001"),
                    Value::Int(1747379028),
                    Value::from("running"),
                    Value::Int(1200),
                    Value::Null,
                    Value::Float(12345.0 * 0.001),
                    Value::Int(0),
                    Value::from("L2"),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    let tools: Vec<&Vec<Value>> = writes[2..]
        .iter()
        .map(|w| match w {
            W::Insert { table, values, .. } if table == "lathe_tools" => values,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(tools[0][2..], [Value::Int(1), Value::Float(25.0 * 0.001)]);
    assert_eq!(tools[1][2..], [Value::Int(7), Value::Float(3.5 * 0.001)]);

    // An unmapped code is kept (as text), a missing array writes no element rows.
    let (r, writes) = run(
        &m,
        r#"{"ctrl":{"state":9},"spindle":{"rpm":0},"pos":{"x_um":0}}"#,
    );
    r.unwrap();
    assert_eq!(writes.len(), 2);
    match &writes[1] {
        W::UpsertNewest { values, .. } => assert_eq!(values[2], Value::from("9")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_element_is_an_error_naming_it_and_nothing_is_written() {
    let m = mapping(LATHE);
    let (r, writes) = run(
        &m,
        r#"{"ctrl":{"state":1},"spindle":{"rpm":1},"pos":{"x_um":0},"tools":[{"slot":1,"wear_um":2},{"wear_um":1}]}"#,
    );
    assert_eq!(
        r.unwrap_err(),
        "mapping T.json (class T): rows[2].columns.slot: /tools/1/slot is missing from the payload"
    );
    assert!(writes.is_empty());
    let (r, _) = run(
        &m,
        r#"{"ctrl":{"state":1},"spindle":{"rpm":1.5},"pos":{"x_um":0}}"#,
    );
    assert_eq!(
        r.unwrap_err(),
        "mapping T.json (class T): rows[1].columns.spindle_rpm: /spindle/rpm: expected an integer, found 1.5"
    );
    let (r, _) = run(
        &m,
        r#"{"ctrl":{"state":1},"spindle":{"rpm":1},"pos":{"x_um":0},"tools":{}}"#,
    );
    assert!(r
        .unwrap_err()
        .contains("rows[2].for_each: /tools is an object {}, not an array"));
}

#[test]
fn value_maps_refuse_or_null_what_they_do_not_list() {
    let text = |unmapped: &str| {
        format!(
            r#"{{"rows":[{{"table":"t","columns":{{"s":{{"pointer":"/s","type":"text","map":{{"0":"idle","true":"on","E1":"alarm"}}{unmapped}}}}}}}]}}"#
        )
    };
    let m = mapping(&text(""));
    for (p, want) in [
        (r#"{"s":0}"#, "idle"),
        (r#"{"s":true}"#, "on"),
        (r#"{"s":"E1"}"#, "alarm"),
    ] {
        let (r, w) = run(&m, p);
        r.unwrap();
        assert!(matches!(&w[0], W::Insert { values, .. } if values[0] == Value::from(want)));
    }
    let (r, _) = run(&m, r#"{"s":4}"#);
    assert!(r
        .unwrap_err()
        .contains("/s is number 4, which the map does not list"));
    let m = mapping(&text(r#","unmapped":"null""#));
    let (r, w) = run(&m, r#"{"s":4}"#);
    r.unwrap();
    assert!(matches!(&w[0], W::Insert { values, .. } if values[0].is_null()));
    let m = mapping(&text(r#","unmapped":"default","unmapped_default":"other""#));
    let (_, w) = run(&m, r#"{"s":4}"#);
    assert!(matches!(&w[0], W::Insert { values, .. } if values[0] == Value::from("other")));
}

#[test]
fn a_setting_the_machine_lacks_refuses_the_machine() {
    let spec = crate::spec::parse(
        r#"{"rows":[{"table":"t","columns":{"line":{"setting":"/line","type":"text"}}}]}"#,
    )
    .unwrap();
    // `check` without a machine accepts it ...
    Mapping::compile(&spec, "T", Machine::Any).unwrap();
    // ... a machine without the setting is refused, one with it gets it.
    let e = Mapping::compile(&spec, "T", Machine::Settings(None)).unwrap_err();
    assert!(
        e[0].starts_with(
            "rows[0].columns.line.setting: \"/line\" is not in this machine's settings"
        ),
        "{e:?}"
    );
    let s = json!({"line": 4});
    let e = Mapping::compile(&spec, "T", Machine::Settings(Some(&s))).unwrap_err();
    assert!(
        e[0].contains("expected text (a JSON string), found number 4"),
        "{e:?}"
    );
}

#[test]
fn engine_settings_name_the_file_and_class_in_errors() {
    let settings = EngineSettings {
        class: "Fanuc".into(),
        mapping_file: "config/mappings/Fanuc.json".into(),
        mapping:
            json!({"rows":[{"table":"t","columns":{"spin":{"pointer":"/spin","type":"flaot"}}}]})
                .to_string(),
        machine: None,
    };
    assert_eq!(
        settings.compile().unwrap_err(),
        r#"mapping config/mappings/Fanuc.json (class Fanuc): rows[0].columns.spin.type: unknown type "flaot"; expected one of text, integer, float, boolean, json"#
    );
}

#[test]
fn the_whole_payload_is_stored_as_received_and_sub_objects_as_json() {
    let m = mapping(
        r#"{"rows":[{"table":"t","columns":{"all":{"pointer":"","type":"json"},"sub":{"pointer":"/a","type":"json"}}}]}"#,
    );
    let payload = r#"{ "a" : { "b" : 1.50 } }"#;
    let (r, w) = run(&m, payload);
    r.unwrap();
    match &w[0] {
        W::Insert { values, .. } => {
            assert_eq!(values[0], Value::json_text(payload));
            assert_eq!(values[1], Value::json_text(r#"{"b":1.5}"#));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pointers_follow_rfc_6901() {
    let m = mapping(
        r#"{"rows":[{"table":"t","columns":{"a":{"pointer":"/a~1b/m~0n","type":"integer"},"b":{"pointer":"/arr/1","type":"integer"},"c":{"pointer":"/arr/01","type":"integer","missing":"null"}}}]}"#,
    );
    let (r, w) = run(&m, r#"{"a/b":{"m~n":3},"arr":[5,6]}"#);
    r.unwrap();
    assert!(
        matches!(&w[0], W::Insert { values, .. } if values[..] == [Value::Int(3), Value::Int(6), Value::Null])
    );
}

#[test]
fn a_starter_mapping_from_a_recorded_payload_loads_and_stores_every_leaf() {
    let payloads = [
        json!({"ctrlState": 1, "spindle": {"rpm": 1200, "load": 0.5, "temp_mC": 4}, "door_open": false,
               "alarms": [{"code": "E1", "text": "oil", "ack": true}], "axes": [1, 2], "X-Axis": 3,
               "tags": []}),
        json!({"ctrlState": 2, "spindle": {"rpm": 1300, "load": 1, "temp_mC": 5}, "door_open": true,
               "alarms": [{"code": "E2", "text": "door", "extra": {"n": 1}}], "axes": [], "X-Axis": 4,
               "tags": []}),
        // An empty array of alarms is no JSON column beside the alarm rows.
        json!({"ctrlState": 0, "spindle": {"rpm": 0, "load": 0, "temp_mC": 5}, "door_open": true,
               "alarms": [], "axes": [3], "X-Axis": 4, "tags": []}),
    ];
    let s = starter("CNCTypeZ", &payloads).unwrap();
    let spec = crate::spec::parse(&s.text).unwrap_or_else(|e| panic!("{e}\n{}", s.text));
    let m = Mapping::compile(&spec, "Z", Machine::Settings(None)).unwrap();
    let tables: Vec<&str> = m.rows().iter().map(|r| r.table()).collect();
    assert_eq!(
        tables,
        ["cnc_data", "cnc_type_z_values", "cnc_type_z_alarms"]
    );
    // serde_json's maps are sorted, so columns come in key order ("X-Axis" first).
    assert_eq!(
        m.rows()[1].columns(),
        [
            "cnc_id",
            "part_program",
            "timestamp",
            "x_axis",
            "axes",
            "ctrl_state",
            "door_open",
            "spindle_load",
            "spindle_rpm",
            "spindle_temp_mc",
            "tags"
        ]
        .map(String::from)
    );
    assert_eq!(
        m.rows()[2].columns(),
        ["cnc_id", "timestamp", "ack", "code", "text", "extra_n"].map(String::from)
    );
    assert!(
        s.text
            .contains(r#""spindle_load": {"pointer":"/spindle/load","type":"float"}"#),
        "{}",
        s.text
    );
    assert!(
        s.text
            .contains(r#""ack": {"pointer":"/ack","type":"boolean","missing":"null"}"#),
        "{}",
        s.text
    );
    assert_eq!(s.tables.len(), 2);
    assert!(
        s.tables[0].create.contains("`spindle_rpm` BIGINT NULL"),
        "{}",
        s.tables[0].create
    );
    assert!(
        s.tables[0].create.contains("`axes` JSON NULL"),
        "{}",
        s.tables[0].create
    );
    assert!(s.tables[1]
        .create
        .starts_with("CREATE TABLE IF NOT EXISTS `cnc_type_z_alarms`"));
    let (r, w) = run(&m, &payloads[0].to_string());
    r.unwrap();
    assert_eq!(w.len(), 3);
}
