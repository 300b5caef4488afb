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

#[cfg(test)]
mod tests {
    use mes_collector::config::ClassMapping;

    use super::classes_json;

    #[test]
    fn maps_each_generated_machine_to_its_class_as_the_collector_reads_it() {
        let text = classes_json(3);
        let mappings: Vec<ClassMapping> = serde_json::from_str(&text).unwrap();
        let got: Vec<(&str, &str)> = mappings
            .iter()
            .map(|m| (m.cnc_id.as_str(), m.class_name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("SIM-A-0001", "CNCTypeA"),
                ("SIM-B-0002", "CNCTypeB"),
                ("SIM-A-0003", "CNCTypeA"),
            ]
        );
        assert_eq!(text.lines().count(), 5, "one mapping per line:\n{text}");
    }

    #[test]
    fn no_machines_is_an_empty_list() {
        assert_eq!(classes_json(0), "[]\n");
    }
}
