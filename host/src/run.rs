//! `mes-collector run`: loads the configuration and plugins, takes the lease, builds
//! the parts, starts the pipeline ([`crate::pipeline`]) and the intake, and stops them
//! in order on SIGINT or SIGTERM.

use std::{path::Path, process::ExitCode, thread, time::Duration};

use log::{error, info, warn};

use crate::{
    config::{Config, ConfigError},
    crash_guard::{self, watchdog, GuardSettings, MessageInHand},
    dispatch::handler::MessageHandler,
    intake::{dedup::Redelivery, mqtt::MqttIntake},
    metrics::Metrics,
    pipeline::{Panicked, Pipeline},
    plugins::{load_dir, PluginSet, Router},
    shutdown::Shutdown,
    sink::{
        lease::Lease,
        mysql::{connect, MysqlSink, ServerInUse},
    },
    spool::Spool,
};

/// Why the collector did not start.
#[derive(Debug)]
pub enum NotStarted {
    /// The configuration files are wrong: every problem found.
    Config(Vec<ConfigError>),
    /// Something the operator can fix (plugins, spool, lease, broker), named in the text.
    Refused(String),
    /// The system refused a thread or a signal handler.
    System(String),
}

impl NotStarted {
    /// 2 for what the operator can fix, 1 for the rest (as a crash would be).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            NotStarted::Config(_) | NotStarted::Refused(_) => ExitCode::from(2),
            NotStarted::System(_) => ExitCode::FAILURE,
        }
    }

    fn log(&self, config_dir: &Path) {
        match self {
            NotStarted::Config(errors) => {
                for e in errors {
                    error!("{e}");
                }
                error!(
                    "not starting; `mes-collector check --config-dir {}` lists every problem",
                    config_dir.display()
                );
            }
            NotStarted::Refused(why) | NotStarted::System(why) => error!("{why}"),
        }
    }
}

/// Runs the collector until SIGINT or SIGTERM: 0 after a clean stop, 2 when the
/// configuration, plugins, spool, lease or broker do not allow a start, 1 otherwise.
pub fn run(config_dir: &Path) -> ExitCode {
    run_until_signalled(config_dir).unwrap_or_else(|e| {
        e.log(config_dir);
        e.exit_code()
    })
}

fn run_until_signalled(config_dir: &Path) -> Result<ExitCode, NotStarted> {
    let mut cfg = Config::load(config_dir).map_err(NotStarted::Config)?;
    let plugins = load_plugins(&mut cfg).map_err(NotStarted::Refused)?;
    for m in cfg.classes.values() {
        if !plugins.by_class.contains_key(&m.class_name) {
            warn!(
                "cnc_id {} is mapped to class {:?}, which no loaded plugin provides; its messages will be dead letters",
                m.cnc_id, m.class_name
            );
        }
    }
    info!(
        "{} starting: config {}, {} plugins, {} machines mapped, broker {} topic {:?} as {:?}, database {}",
        crate::version_line(),
        cfg.dir.display(),
        plugins.by_class.len(),
        cfg.classes.len(),
        cfg.collector.broker.uri,
        cfg.collector.broker.topic,
        cfg.collector.broker.client_id,
        cfg.db.target()
    );

    // Requested once the intake has stopped: the dispatcher and writer finish the
    // batch in hand.
    let stop = Shutdown::default();
    // Requested by the first SIGINT/SIGTERM; it also ends a connect still retrying.
    let signalled = Shutdown::default();
    let flag = signalled.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        if flag.request() {
            // A second signal: stop now. Whatever the broker did not get an
            // acknowledgement for, it sends again.
            eprintln!("second signal: exiting at once");
            std::process::exit(130);
        }
    }) {
        return Err(NotStarted::System(format!(
            "cannot install the signal handler: {e}"
        )));
    }

    let (spool, recovery) = Spool::open(cfg.collector.spool.clone()).map_err(|e| {
        NotStarted::Refused(format!(
            "cannot open the spool in {}: {e}",
            cfg.collector.spool.dir.display()
        ))
    })?;
    info!(
        "spool {}: {} segments, {} bytes, records {}..{}{}",
        cfg.collector.spool.dir.display(),
        recovery.segments,
        recovery.bytes,
        recovery.first_seq,
        recovery.next_seq,
        if recovery.cut_bytes > 0 {
            format!(", damaged tail of {} bytes cut off", recovery.cut_bytes)
        } else {
            String::new()
        }
    );
    let metrics = Metrics::new(
        cfg.classes.keys().map(String::as_str),
        cfg.classes.values().map(|m| m.class_name.as_str()),
    );
    metrics
        .plugin_load_failures
        .set(plugins.failures.len() as i64);
    if !cfg.collector.metrics_addr.is_empty() {
        // Monitoring is not worth losing data over: without it the collector still runs.
        if let Err(e) = crate::metrics::serve(&cfg.collector.metrics_addr, metrics.clone()) {
            error!("{e}");
        }
    }
    let lease = Lease::new(
        &cfg.collector.broker.client_id,
        Duration::from_secs(cfg.collector.client_lease_secs),
    );
    // Before subscribing: a second collector with this client_id would take the
    // broker session from the first.
    take_lease(&cfg.db, &lease)
        .map_err(|why| NotStarted::Refused(format!("not starting: {why}")))?;
    let policy = &cfg.collector.plugins;
    let startup = crash_guard::start(
        &cfg.collector.spool.dir,
        &spool,
        &plugins.by_class,
        &cfg.classes,
        GuardSettings {
            quarantine_after_crashes: policy.quarantine_after_crashes,
            quarantine_window_secs: policy.quarantine_window_secs,
            batch_max_messages: cfg.collector.batch.max_messages,
        },
    )
    .map_err(NotStarted::Refused)?;
    let isolation = crate::isolation::Isolation::new(policy, &cfg.classes, &plugins.by_class)
        .map_err(NotStarted::Refused)?;
    let mut router =
        Router::new(cfg.classes.clone(), plugins.by_class.clone()).with_isolation(isolation);
    for (class, n) in &startup.recent_crashes {
        metrics
            .plugin_recent_crashes
            .with_label_values(&[metrics.class_label(Some(class))])
            .set(*n as i64);
    }
    for q in &startup.quarantined {
        metrics
            .plugin_quarantined
            .with_label_values(&[metrics.class_label(Some(&q.class))])
            .set(1);
        router.quarantine(
            &q.class,
            format!(
                "{}; install a different build or run `mes-collector quarantine lift {}`, then restart",
                q.describe(),
                q.class
            ),
        );
    }
    if policy.call_timeout_ms > 0 {
        let (watch_spool, classes, loaded) =
            (spool.clone(), cfg.classes.clone(), plugins.by_class.clone());
        let describe = Box::new(move |seq: u64| {
            MessageInHand::find(&watch_spool, seq, &classes, &loaded)
                .unwrap_or_default()
                .describe(seq)
        });
        if let Err(e) = watchdog::spawn(
            std::time::Duration::from_millis(policy.call_timeout_ms),
            metrics.clone(),
            describe,
        ) {
            return Err(NotStarted::System(format!(
                "cannot start the plugin watchdog thread: {e}"
            )));
        }
    }
    let writers = cfg.collector.batch.writers;
    let server = ServerInUse::default();
    let sinks = (0..writers)
        .map(|_| {
            MysqlSink::new(
                cfg.db.clone(),
                &cfg.collector.broker.client_id,
                cfg.collector.dead_letter_payload_limit,
                metrics.clone(),
            )
            .with_lease(lease.clone())
            .sharing_server(server.clone())
        })
        .collect();
    let pipeline = Pipeline::start(
        spool.clone(),
        MessageHandler::new(router, cfg.collector.limits),
        cfg.collector.batch.clone(),
        startup.guard,
        sinks,
        metrics.clone(),
        stop.clone(),
    );

    let redelivery = Redelivery::new(recovery.tail, recovery.acknowledged_before);
    let stop_spool = spool.clone();
    let intake = match MqttIntake::start(
        &cfg.collector.broker,
        spool,
        redelivery,
        metrics,
        cfg.collector.limits.max_message_bytes,
        &signalled,
        &cfg.collector.spool.dir,
    ) {
        Ok(i) => i,
        Err(e) => {
            stop.request();
            let _ = pipeline.join();
            return Err(NotStarted::Refused(e));
        }
    };
    if intake.is_some() {
        info!("collector running; SIGINT or SIGTERM stops it");
        while !signalled.requested() {
            thread::sleep(Duration::from_millis(100));
        }
    }
    info!("stopping: no new messages; committing the batch in hand");
    if let Some(intake) = intake {
        if let Some(acknowledged_before) = intake.stop(&stop_spool) {
            if let Err(e) = stop_spool.mark_clean_stop(acknowledged_before) {
                warn!("cannot record the clean stop in the spool: {e}");
            }
        }
    }
    stop.request();
    let joined = pipeline.join();
    // So that a replacement can start at once rather than after the lease runs out.
    match connect(&cfg.db).and_then(|mut c| lease.release(&mut c)) {
        Ok(()) => info!(
            "lease on broker.client_id {:?} given back",
            lease.client_id()
        ),
        Err(e) => {
            warn!("could not give back the lease on broker.client_id ({e}); it runs out by itself")
        }
    }
    match joined {
        Ok(totals) => {
            info!("stopped: {}", totals.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(Panicked(thread)) => {
            error!("the {thread} thread panicked");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Loads the plugins and the mapped classes of `cfg` as the collector runs them,
/// logging each refused file and each class loaded. `Err` is a reason not to start.
/// `dead-letters replay` loads them the same way, so that a replayed message meets the
/// plugins the collector would hand it to.
pub fn load_plugins(cfg: &mut Config) -> Result<PluginSet, String> {
    crate::plugins::services::set_limits(
        cfg.collector.plugins.log_records_per_second,
        cfg.collector.plugins.metric_series_per_class,
    );
    let mut plugins = load_dir(&cfg.collector.plugins_dir, &cfg.collector.plugins)?;
    for f in &plugins.failures {
        error!(
            "plugin {} not loaded: {}",
            f.file.display(),
            f.reason.replace('\n', " | ")
        );
    }
    if let Some(e) = plugins.conflict_error() {
        return Err(e);
    }
    // Classes defined by mapping files, run by the mapping plugin.
    crate::mappings::start(cfg, &mut plugins)?;
    for p in plugins.by_class.values() {
        info!(
            "plugin {} {} loaded from {}",
            p.info.class_name,
            p.info.version,
            p.info.file.display()
        );
    }
    Ok(plugins)
}

/// Takes the lease on the collector's client_id. With the database unreachable, the
/// collector starts all the same (spooling is what it is for) and takes the lease
/// with its first commit, which cannot happen without it.
fn take_lease(db: &crate::sink::config::DbConfig, lease: &Lease) -> Result<(), String> {
    let claimed = connect(db).and_then(|mut conn| lease.claim(&mut conn));
    match claimed {
        Ok(Ok(())) => {
            info!(
                "lease on broker.client_id {:?} taken ({} s, renewed with every commit)",
                lease.client_id(),
                lease.ttl().as_secs()
            );
            Ok(())
        }
        Ok(Err(refused)) => Err(refused.explain(lease.client_id(), lease.ttl())),
        Err(e) => {
            warn!(
                "database {} unreachable ({e}): starting without the lease on broker.client_id {:?}; \
                 nothing is committed before it is taken",
                db.target(),
                lease.client_id()
            );
            Ok(())
        }
    }
}
