//! One message through its plugin: the limits check, the envelope parsed once, the
//! route to the machine's plugin instance (in process or in a runner process), and
//! the plugin's writes recorded into the batch, or the message's dead letter.
//!
//! The dispatcher runs received messages through it; `mes-collector replay` and
//! `dead-letters replay` run recorded ones, so that they go exactly the way received
//! ones do.

use abi_stable::std_types::RResult;
use log::debug;
use mes_plugin_api::{FailureKind, Message};

use crate::{
    crash_guard::CrashGuard,
    dead_letter::{DeadLetter, Reason},
    envelope::{self, Limits},
    isolation::{Isolation, Request},
    plugins::Router,
    sink::batch::{Batch, Shapes},
};

/// Runs messages through their machines' plugins into batches.
pub struct MessageHandler {
    router: Router,
    /// The row shapes plugins have written so far, numbered; a batch's rows refer to
    /// them by number.
    shapes: Shapes,
    /// Size and nesting bounds a message must pass before it is parsed.
    limits: Limits,
}

impl MessageHandler {
    pub fn new(router: Router, limits: Limits) -> Self {
        MessageHandler {
            router,
            shapes: Shapes::default(),
            limits,
        }
    }

    pub fn shapes(&self) -> &Shapes {
        &self.shapes
    }

    /// Runs one message through its plugin, recording its writes, or its dead letter,
    /// as the batch's next message.
    pub fn handle(&mut self, topic: &str, payload: Vec<u8>, batch: &mut Batch) {
        self.handle_guarded(topic, payload, batch, None);
    }

    /// [`MessageHandler::handle`] for a spooled message: `guarded` is the crash guard
    /// and the message's spool record, noted around the plugin code that runs for it.
    pub(crate) fn handle_guarded(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        batch: &mut Batch,
        guarded: Option<(&mut CrashGuard, u64)>,
    ) {
        batch.begin(topic);
        let dead = self.record_writes(topic, &payload, batch, guarded).err();
        batch.end(payload, dead);
    }

    fn record_writes(
        &mut self,
        topic: &str,
        payload: &[u8],
        batch: &mut Batch,
        guarded: Option<(&mut CrashGuard, u64)>,
    ) -> Result<(), DeadLetter> {
        envelope::check_limits(payload, &self.limits)
            .map_err(|e| DeadLetter::new(e.reason, e.detail))?;
        let env = envelope::parse(payload).map_err(|e| DeadLetter::new(e.reason, e.detail))?;
        batch.current().cnc_id = Some(env.cnc_id.to_string());
        // An isolated plugin's crash or hang ends its runner process, not this one:
        // the crash guard has nothing to note.
        if let Some(isolation) = self.router.isolated(&env.cnc_id) {
            let seq = guarded.map(|(_, seq)| seq);
            return call_isolated(isolation, &mut self.shapes, topic, &env, batch, seq);
        }
        // From here plugin code runs: the constructor (for a machine's first message)
        // and then `handle`.
        match guarded {
            Some((guard, seq)) => {
                guard.before_call(seq);
                let result = call_plugin(&mut self.router, &mut self.shapes, topic, &env, batch);
                guard.after_call();
                result
            }
            None => call_plugin(&mut self.router, &mut self.shapes, topic, &env, batch),
        }
    }
}

/// [`call_plugin`] for a plugin in a runner process: its writes come back over a pipe
/// and go through the same recorder checks as in process.
fn call_isolated(
    isolation: &mut Isolation,
    shapes: &mut Shapes,
    topic: &str,
    env: &envelope::Envelope<'_>,
    batch: &mut Batch,
    seq: Option<u64>,
) -> Result<(), DeadLetter> {
    let request = Request {
        topic,
        cnc_id: &env.cnc_id,
        part_program: &env.part_program,
        timestamp: env.timestamp,
        payload: env.payload(),
        seq,
    };
    let (info, ops) = isolation.call(&request)?;
    batch.current().plugin = Some(info.clone());
    let mut recorder = batch.recorder(shapes);
    for op in ops {
        recorder.apply(op).map_err(|e| {
            DeadLetter::new(
                Reason::PluginError,
                format!(
                    "plugin {} {} ({}) on cnc_id {}, running isolated, sent a write the collector refuses: {e}",
                    info.class_name,
                    info.version,
                    info.file.display(),
                    env.cnc_id
                ),
            )
            .cnc_id(&env.cnc_id)
            .plugin(&info.class_name, &info.version)
        })?;
    }
    Ok(())
}

fn call_plugin(
    router: &mut Router,
    shapes: &mut Shapes,
    topic: &str,
    env: &envelope::Envelope<'_>,
    batch: &mut Batch,
) -> Result<(), DeadLetter> {
    let instance = router.instance(&env.cnc_id)?;
    batch.current().plugin = Some(instance.info.clone());
    debug!("cnc_id={} -> {}", env.cnc_id, instance.info.class_name);
    let message = Message::new(
        topic,
        &env.cnc_id,
        &env.part_program,
        env.timestamp,
        env.payload(),
    );
    let mut recorder = batch.recorder(shapes);
    let (db, _lent) = crate::sink::batch::lend(&mut recorder);
    let _call = crate::plugins::services::enter_call(&env.cnc_id);
    match instance.plugin.handle(&message, db) {
        RResult::ROk(()) => Ok(()),
        RResult::RErr(failure) => {
            let reason = match failure.kind {
                FailureKind::Error => Reason::PluginError,
                FailureKind::Panic => Reason::PluginPanic,
            };
            Err(DeadLetter::new(reason, failure.to_string())
                .cnc_id(&env.cnc_id)
                .plugin(&instance.info.class_name, &instance.info.version))
        }
    }
}
