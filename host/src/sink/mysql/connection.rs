//! Which server the sink talks to, and how: the driver's options, the servers of
//! `hosts` tried in order, and on a Galera node whether it takes transactions and
//! which view of the cluster it is in.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use log::debug;
use mysql::{prelude::Queryable, ClientIdentity, Conn, Opts, OptsBuilder, SslOpts};

use crate::{config::tls::TlsConfig, sink::config::DbConfig};

/// The driver's TLS settings: CA verification always, the host name check unless
/// `verify_hostname` is false, a client certificate if given.
fn ssl_opts(tls: &TlsConfig) -> SslOpts {
    let mut ssl = SslOpts::default().with_danger_skip_domain_validation(!tls.verify_hostname);
    if let Some(ca) = &tls.ca_file {
        ssl = ssl.with_root_cert_path(Some(ca.clone()));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(cert.clone(), key.clone())));
    }
    ssl
}

/// The driver's options for server `endpoint` of `cfg.endpoints()`.
pub(super) fn opts(cfg: &DbConfig, endpoint: usize, connect_timeout: Duration) -> Opts {
    let (host, port) = cfg.endpoints().swap_remove(endpoint);
    OptsBuilder::new()
        .ssl_opts(cfg.tls.as_ref().map(ssl_opts))
        .ip_or_hostname(Some(host))
        .tcp_port(port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.clone()))
        .db_name(Some(cfg.database.clone()))
        .stmt_cache_size(Some(256))
        // Connect where the configuration says; the driver would otherwise switch to
        // the server's unix socket for 127.0.0.1, past any proxy or TLS setting.
        .prefer_socket(false)
        .tcp_connect_timeout(Some(connect_timeout))
        // Detects a silently dead connection (a cut network) instead of hanging.
        .read_timeout(Some(Duration::from_secs(30)))
        .write_timeout(Some(Duration::from_secs(30)))
        .into()
}

/// Which server of `hosts` the collector's writers write to, shared by them: a writer
/// that fails over or moves back takes the others along at their next transaction or
/// idle check.
/// Left to themselves, an idle writer's 30 s return could leave the busy one behind
/// on the later server (seen in the Galera failover test: the log said "moving back"
/// while every commit went on to node 2), and two writers of one collector on two
/// Galera nodes conflict on the lease row.
#[derive(Clone, Default)]
pub struct ServerInUse(Arc<AtomicUsize>);

impl ServerInUse {
    pub(super) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    pub(super) fn set(&self, endpoint: usize) {
        self.0.store(endpoint, Ordering::Relaxed);
    }
}

pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// While on a later server of `hosts`, how often an earlier one is tried again, and
/// how long such a try may take: it holds up the batch in hand.
pub(super) const RETURN_EVERY: Duration = Duration::from_secs(30);
pub(super) const RETURN_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects to the first server of `cfg` that answers.
pub fn connect(cfg: &DbConfig) -> Result<Conn, mysql::Error> {
    connect_first(cfg, 0..cfg.endpoints().len(), CONNECT_TIMEOUT).map(|(conn, _)| conn)
}

/// Connects to the first of `endpoints` (indices into `cfg.endpoints()`) that
/// answers; the error is the last server's.
pub(super) fn connect_first(
    cfg: &DbConfig,
    endpoints: std::ops::Range<usize>,
    timeout: Duration,
) -> Result<(Conn, usize), mysql::Error> {
    let mut last = None;
    for i in endpoints {
        match connect_to(cfg, i, timeout) {
            Ok(conn) => return Ok((conn, i)),
            Err(e) => {
                debug!("database server {} unreachable: {e}", endpoint_name(cfg, i));
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no database server configured").into()))
}

fn connect_to(cfg: &DbConfig, endpoint: usize, timeout: Duration) -> Result<Conn, mysql::Error> {
    let mut conn = Conn::new(opts(cfg, endpoint, timeout))?;
    // Strict mode: a value that does not fit is refused (and dead-lettered), never
    // silently truncated.
    conn.query_drop("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")?;
    // On a Galera node, reads wait until the node has applied every write the cluster
    // certified before them: after failing over from a node that died while
    // committing, the position read then tells whether that commit happened.
    let galera: Option<(String, String)> = conn.query_first("SHOW VARIABLES LIKE 'wsrep_on'")?;
    if galera.is_some_and(|(_, on)| on.eq_ignore_ascii_case("ON")) {
        // A node outside the primary component (cut off from the others, or still
        // receiving its state transfer when it rejoins) accepts connections and
        // answers SET and SHOW, but refuses every transaction (1047). Taking it for
        // reachable would keep the collector on it, retrying, while the rest of the
        // cluster works: count it as unreachable, so the next server is tried.
        if !galera_ready(&mut conn)? {
            return Err(std::io::Error::other(format!(
                "Galera node {} is not ready (wsrep_ready OFF: outside the primary component, or joining)",
                endpoint_name(cfg, endpoint)
            ))
            .into());
        }
        conn.query_drop("SET SESSION wsrep_sync_wait = 1")?;
    }
    Ok(conn)
}

/// The Galera cluster's view (`wsrep_cluster_conf_id`, which grows with every change
/// of membership), or `None` off Galera.
pub(super) fn galera_view(conn: &mut Conn) -> Result<Option<u64>, mysql::Error> {
    let on: Option<(String, String)> = conn.query_first("SHOW VARIABLES LIKE 'wsrep_on'")?;
    if !on.is_some_and(|(_, v)| v.eq_ignore_ascii_case("ON")) {
        return Ok(None);
    }
    cluster_view(conn)
}

/// `wsrep_cluster_conf_id` of a connection known to be to a Galera node: after each
/// commit, one query where `galera_view` needs two.
pub(super) fn cluster_view(conn: &mut Conn) -> Result<Option<u64>, mysql::Error> {
    let view: Option<(String, u64)> =
        conn.query_first("SHOW STATUS LIKE 'wsrep_cluster_conf_id'")?;
    Ok(view.map(|(_, v)| v))
}

/// Whether the server takes transactions: `wsrep_ready` on a Galera node, always
/// elsewhere.
pub(super) fn galera_ready(conn: &mut Conn) -> Result<bool, mysql::Error> {
    let ready: Option<(String, String)> = conn.query_first("SHOW STATUS LIKE 'wsrep_ready'")?;
    Ok(ready.is_none_or(|(_, on)| on.eq_ignore_ascii_case("ON")))
}

pub(super) fn endpoint_name(cfg: &DbConfig, endpoint: usize) -> String {
    let (host, port) = cfg.endpoints().swap_remove(endpoint);
    crate::sink::config::endpoint_text(&host, port)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn cluster(hosts: &[&str]) -> DbConfig {
        DbConfig {
            host: String::new(),
            port: 3306,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            user: "mes".into(),
            password: "pw".into(),
            password_file: None,
            database: "cnc_database".into(),
            tls: None,
        }
    }

    #[test]
    fn endpoints_are_named_host_colon_port_with_brackets_for_ipv6() {
        let cfg = cluster(&["db1", "db2:3307", "[::1]:3308", "10.0.0.9"]);
        let names: Vec<String> = (0..4).map(|i| endpoint_name(&cfg, i)).collect();
        assert_eq!(
            names,
            ["db1:3306", "db2:3307", "[::1]:3308", "10.0.0.9:3306"]
        );
        let single = DbConfig {
            host: "localhost".into(),
            port: 3310,
            ..cluster(&[])
        };
        assert_eq!(endpoint_name(&single, 0), "localhost:3310");
    }

    #[test]
    fn the_options_connect_over_tcp_to_the_chosen_server_with_timeouts() {
        let cfg = cluster(&["db1", "db2:3307"]);
        let opts = opts(&cfg, 1, Duration::from_millis(1_500));
        assert_eq!(opts.get_ip_or_hostname(), "db2");
        assert_eq!(opts.get_tcp_port(), 3307);
        assert_eq!(opts.get_user(), Some("mes"));
        assert_eq!(opts.get_pass(), Some("pw"));
        assert_eq!(opts.get_db_name(), Some("cnc_database"));
        assert!(!opts.get_prefer_socket());
        assert_eq!(opts.get_stmt_cache_size(), 256);
        assert_eq!(
            opts.get_tcp_connect_timeout(),
            Some(Duration::from_millis(1_500))
        );
        assert_eq!(opts.get_read_timeout(), Some(&Duration::from_secs(30)));
        assert_eq!(opts.get_write_timeout(), Some(&Duration::from_secs(30)));
        assert!(opts.get_ssl_opts().is_none());
    }

    #[test]
    fn tls_verifies_the_ca_always_and_the_host_name_unless_told_not_to() {
        let tls = |verify_hostname, cert: Option<&str>| TlsConfig {
            ca_file: Some(PathBuf::from("/etc/ca.pem")),
            cert_file: cert.map(PathBuf::from),
            key_file: cert.map(|_| PathBuf::from("/etc/client.key")),
            verify_hostname,
        };
        let ssl = ssl_opts(&tls(true, None));
        assert_eq!(ssl.root_cert_path(), Some(Path::new("/etc/ca.pem")));
        assert!(!ssl.skip_domain_validation());
        assert!(!ssl.accept_invalid_certs());
        assert!(ssl.client_identity().is_none());

        let ssl = ssl_opts(&tls(false, Some("/etc/client.pem")));
        assert!(ssl.skip_domain_validation());
        assert!(!ssl.accept_invalid_certs());
        let id = ssl.client_identity().expect("a client certificate");
        assert_eq!(id.cert_chain_path(), Path::new("/etc/client.pem"));
        assert_eq!(id.priv_key_path(), Path::new("/etc/client.key"));

        let cfg = DbConfig {
            tls: Some(tls(true, None)),
            ..cluster(&["db1"])
        };
        assert!(opts(&cfg, 0, CONNECT_TIMEOUT).get_ssl_opts().is_some());
    }
}
