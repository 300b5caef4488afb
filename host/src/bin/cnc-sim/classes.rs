//! `classes`: the cnc_classes.json that maps the machines `generate` simulates.

use std::io::{self, Write};

use serde::Serialize;

use crate::failure::{fail, Result};
use crate::machine::id_and_class;

pub fn print(machines: u32) -> Result<()> {
    io::stdout()
        .write_all(classes_json(machines).as_bytes())
        .or_else(|e| fail(format!("cannot write to stdout: {e}")))
}

fn classes_json(machines: u32) -> String {
    // The collector's `ClassMapping` also has `settings`, which would come out as
    // `null` on every line.
    #[derive(Serialize)]
    struct Mapping {
        cnc_id: String,
        class_name: &'static str,
    }
    let rows: Vec<String> = (1..=machines)
        .map(|i| {
            let (cnc_id, class) = id_and_class(i);
            let row = Mapping {
                cnc_id,
                class_name: class.class_name(),
            };
            serde_json::to_string(&row).expect("a mapping always serializes")
        })
        .collect();
    // One mapping per line, like the hand-written config file, so that it
    // diffs and greps well.
    if rows.is_empty() {
        "[]\n".to_string()
    } else {
        format!("[\n  {}\n]\n", rows.join(",\n  "))
    }
}
