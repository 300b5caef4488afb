//! `mes-collector plugin-runner`: the child process an isolated plugin runs in.
//!
//! It loads one plugin file through the collector's own loader (so the trust checks,
//! the ABI checks and the host services apply as in process), then answers the
//! collector's calls one at a time over its stdin and stdout, keeping one plugin
//! instance per cnc_id. Writes go through the same recorder as in process, so a
//! plugin sees the same errors at the same point; the collector checks them again
//! when they arrive, since this process runs code it does not trust.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, BufWriter},
    os::fd::FromRawFd,
    path::PathBuf,
    process::ExitCode,
};

use abi_stable::std_types::RResult;
use log::error;
use mes_plugin_api::Message;

use super::wire::{read_frame, write_frame, Call, Enc, Reply, WireOp};
use crate::{
    config::ClassMapping,
    plugins::{load_file, new_instance, trust, Instance, LoadedPlugin},
    sink::batch::{lend, Batch, RecordedWrite, Shapes},
};

/// What the collector tells its runner on the command line.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub plugin: PathBuf,
    pub allow: Option<Vec<String>>,
    pub allow_insecure_permissions: bool,
    pub log_records_per_second: u32,
    pub metric_series_per_class: u32,
}

/// Runs until the collector closes the pipe. Returns the exit status.
pub fn main(opts: &RunnerOptions) -> ExitCode {
    // SAFETY: plain libc calls on this process's own descriptors and signal
    // dispositions, before any other thread exists.
    let (input, output) = unsafe {
        // Dies with the collector even when the plugin is stuck and never reads the
        // closed pipe. (The signal comes when the thread that started the runner
        // ends: the dispatcher thread, which owns the runners and ends them first.)
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // A Ctrl-C or a `systemctl stop` signals the whole group; the collector stops
        // in its own time and then closes the pipe, which ends this process. Killed
        // by the signal instead, the runner would turn the message in hand into a
        // dead letter.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        // The protocol gets private copies of stdin and stdout; fd 1 then points at
        // stderr, so that a plugin that prints cannot corrupt the frames.
        let input = libc::dup(0);
        let output = libc::dup(1);
        if input < 0 || output < 0 || libc::dup2(2, 1) < 0 {
            eprintln!("plugin runner: cannot set up its pipes");
            return ExitCode::from(2);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
        (File::from_raw_fd(input), File::from_raw_fd(output))
    };
    let mut input = BufReader::new(input);
    let mut output = BufWriter::new(output);
    let send = |out: &mut BufWriter<File>, reply: &Reply| {
        let mut e = Enc::default();
        reply.encode(&mut e);
        write_frame(out, &e.0)
    };

    crate::plugins::services::set_limits(opts.log_records_per_second, opts.metric_series_per_class);
    let policy = trust::PluginPolicy {
        allow: opts.allow.clone(),
        allow_insecure_permissions: opts.allow_insecure_permissions,
        ..Default::default()
    };
    let loaded = trust::admit(&opts.plugin, &policy)
        .and_then(|()| load_file(&opts.plugin).map_err(|f| f.reason));
    let plugin = match loaded {
        Ok(p) => p,
        Err(reason) => {
            let _ = send(&mut output, &Reply::LoadFailed { reason });
            return ExitCode::from(2);
        }
    };
    let hello = Reply::Hello {
        class: plugin.info.class_name.clone(),
        version: plugin.info.version.clone(),
    };
    if send(&mut output, &hello).is_err() {
        return ExitCode::FAILURE;
    }

    let mut runner = Runner {
        plugin,
        instances: HashMap::new(),
        batch: Batch::default(),
        shapes: Shapes::default(),
    };
    let mut frame = Vec::new();
    loop {
        match read_frame(&mut input, &mut frame) {
            Ok(Some(())) => {}
            Ok(None) => return ExitCode::SUCCESS, // the collector closed the pipe: done
            Err(e) => {
                error!(
                    "plugin runner for {}: reading a call: {e}",
                    opts.plugin.display()
                );
                return ExitCode::FAILURE;
            }
        }
        let reply = match Call::decode(&frame) {
            Ok(call) => runner.handle(call),
            Err(e) => {
                error!(
                    "plugin runner for {}: unreadable call: {e}",
                    opts.plugin.display()
                );
                return ExitCode::FAILURE;
            }
        };
        if send(&mut output, &reply).is_err() {
            return ExitCode::FAILURE;
        }
    }
}

struct Runner {
    plugin: LoadedPlugin,
    /// One instance per machine, as in process; a refusal is kept, so that the
    /// constructor is not retried (the collector keeps it too).
    instances: HashMap<String, Result<Instance, String>>,
    batch: Batch,
    shapes: Shapes,
}

impl Runner {
    fn handle(&mut self, call: Call) -> Reply {
        if let Some(introduce) = &call.introduce {
            if !self.instances.contains_key(&call.cnc_id) {
                let settings = match introduce.as_deref().map(serde_json::from_str) {
                    None => None,
                    Some(Ok(v)) => Some(v),
                    Some(Err(e)) => {
                        return Reply::Refused {
                            detail: format!(
                                "settings for cnc_id {:?} are not JSON: {e}",
                                call.cnc_id
                            ),
                        }
                    }
                };
                let mapping = ClassMapping {
                    cnc_id: call.cnc_id.clone(),
                    class_name: self.plugin.info.class_name.clone(),
                    settings,
                };
                let made = new_instance(&self.plugin, &call.cnc_id, &mapping);
                self.instances.insert(call.cnc_id.clone(), made);
            }
        }
        let instance = match self.instances.get_mut(&call.cnc_id) {
            Some(Ok(i)) => i,
            Some(Err(detail)) => {
                return Reply::Refused {
                    detail: detail.clone(),
                }
            }
            None => {
                // The collector introduces each machine once per runner process.
                return Reply::Done {
                    ops: Vec::new(),
                    failure: Some((
                        mes_plugin_api::FailureKind::Error,
                        format!(
                            "the plugin runner has no instance for cnc_id {:?} (a collector bug)",
                            call.cnc_id
                        ),
                    )),
                };
            }
        };
        let message = Message::new(
            &call.topic,
            &call.cnc_id,
            &call.part_program,
            call.timestamp,
            &call.payload,
        );
        self.batch.clear();
        self.batch.begin(&call.topic);
        let result = {
            let mut recorder = self.batch.recorder(&mut self.shapes);
            let (db, _lent) = lend(&mut recorder);
            let _call = crate::plugins::services::enter_call(&call.cnc_id);
            instance.plugin.handle(&message, db)
        };
        let failure = match result {
            RResult::ROk(()) => None,
            RResult::RErr(f) => Some((f.kind, f.to_string())),
        };
        let ops = if failure.is_some() {
            Vec::new()
        } else {
            self.batch
                .writes
                .drain(..)
                .map(|op| match op {
                    RecordedWrite::Row { shape, values } => {
                        let s = self.shapes.get(shape);
                        WireOp::Row {
                            kind: s.kind,
                            table: s.table.clone(),
                            columns: s.columns.clone(),
                            values: values.into_vec(),
                            order_by: s.order_by.clone(),
                        }
                    }
                    RecordedWrite::Exec { sql, params } => WireOp::Exec { sql, params },
                })
                .collect()
        };
        Reply::Done { ops, failure }
    }
}
