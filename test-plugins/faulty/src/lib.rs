//! Test fixture, class `FaultyTest`: misbehaves on request so that the host's handling
//! of plugin failures can be tested. The payload's `action` says how:
//! `"panic"`, `"error"`, `"bad_identifier"` (a column name that is not an identifier),
//! `"bad_sql"` (a row MySQL refuses: unknown table); and, to crash or hang the whole
//! collector the way native code can: `"segfault"` (a write through a null pointer),
//! `"abort"`, `"stack_overflow"` (unbounded recursion), `"hang"` (sleeps forever) and
//! `"sigkill"` (the process kills itself with SIGKILL, as the OOM killer would: no
//! handler runs). Anything else stores a `cnc_data` row like the shipped plugins do. It refuses to be created for a cnc_id containing
//! `REFUSE`, or with `"bad": true` in its settings.

use mes_plugin_api::{export_plugin, standard::insert_cnc_data, Db, Error, Message, Plugin};

pub struct Faulty;

impl Plugin for Faulty {
    const CLASS_NAME: &'static str = "FaultyTest";

    fn new(cnc_id: &str, settings: Option<&str>) -> Result<Self, Error> {
        if cnc_id.contains("REFUSE") {
            return Err(Error::new(format!("refusing machine {cnc_id}")));
        }
        if let Some(text) = settings {
            let settings: serde_json::Value = serde_json::from_str(text)?;
            if settings["bad"] == serde_json::Value::Bool(true) {
                return Err(Error::new(
                    "settings key `bad` is true, which FaultyTest refuses; remove it or set it to false",
                ));
            }
        }
        Ok(Faulty)
    }

    fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
        let payload: serde_json::Value = msg.payload_as()?;
        match payload["action"].as_str().unwrap_or("store") {
            "panic" => panic!("asked to panic by {}", msg.cnc_id()),
            "error" => Err(Error::new("asked to fail")),
            "bad_identifier" => db.insert(
                "cnc_data",
                &["cnc_id`; DROP TABLE cnc_data; --"],
                vec![1.into()],
            ),
            "bad_sql" => db.insert("no_such_table", &["x"], vec![1.into()]),
            "segfault" => {
                // SAFETY: none; crashing the process is the point.
                unsafe {
                    std::ptr::write_volatile(std::hint::black_box(std::ptr::null_mut::<u64>()), 1)
                };
                Ok(())
            }
            "abort" => std::process::abort(),
            "stack_overflow" => {
                let depth = recurse(std::hint::black_box(0));
                Err(Error::new(format!("recursion ended at depth {depth}")))
            }
            "hang" => loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
            },
            "sigkill" => {
                // SAFETY: sends a signal to this process; nothing is touched after it.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            _ => insert_cnc_data(db, msg),
        }
    }
}

/// Recursion the optimiser cannot turn into a loop or remove: each frame keeps a
/// buffer alive across the call, and whether to go on is hidden behind `black_box`.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    if std::hint::black_box(true) {
        recurse(frame[0] + 1) + frame[31]
    } else {
        depth
    }
}

export_plugin!(Faulty);
