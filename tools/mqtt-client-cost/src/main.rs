//! Per-message CPU cost of receiving QoS 1 MQTT messages: paho-mqtt vs rumqttc.
//!
//! Subcommands (broker fixed at 127.0.0.1:$PORT, default 18830):
//!   publish N [RATE]       N QoS 1 messages over 50 topics bench/cost/m00..m49;
//!                          RATE msg/s (0 or absent = as fast as the broker accepts)
//!   sub-paho N             paho-mqtt AsyncClient + set_message_callback
//!   sub-rumqttc N          rumqttc AsyncClient/EventLoop on a current-thread tokio runtime
//!   sub-rumqttc-sync N     rumqttc sync Client/Connection::iter()
//!
//! Subscribers print "READY" once the SUBACK is in, then one RESULT line and one
//! THREADS line after the N-th message.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC_FILTER: &str = "bench/cost/#";
const MACHINES: usize = 50;
const PAYLOAD_LEN: usize = 250;

fn port() -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(18830)
}

fn timeout() -> Duration {
    Duration::from_secs(
        std::env::var("SUB_TIMEOUT_SECS")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(300),
    )
}

#[derive(Clone, Copy, Default)]
struct Usage {
    user: f64,
    sys: f64,
    nvcsw: i64,
    nivcsw: i64,
}

fn usage() -> Usage {
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        Usage {
            user: ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 / 1e6,
            sys: ru.ru_stime.tv_sec as f64 + ru.ru_stime.tv_usec as f64 / 1e6,
            nvcsw: ru.ru_nvcsw,
            nivcsw: ru.ru_nivcsw,
        }
    }
}

/// Per-thread CPU from /proc/self/task/*/stat (clock ticks -> seconds).
fn threads() -> String {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let tid = e.file_name().to_string_lossy().to_string();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            // fields after the ")" : state(3) ... utime(14) stime(15)
            if let Some(rp) = stat.rfind(')') {
                let f: Vec<&str> = stat[rp + 2..].split_whitespace().collect();
                let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let sched = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                let cs: Vec<String> = sched
                    .lines()
                    .filter(|l| l.contains("ctxt_switches"))
                    .map(|l| l.split_whitespace().last().unwrap_or("?").to_string())
                    .collect();
                out.push(format!(
                    "{}:{}:u={:.2}:s={:.2}:vcs={}:ivcs={}",
                    tid,
                    comm.trim(),
                    ut / hz,
                    st / hz,
                    cs.first().map(String::as_str).unwrap_or("?"),
                    cs.get(1).map(String::as_str).unwrap_or("?")
                ));
            }
        }
    }
    out.join(" ")
}

/// What every subscriber records: process start, first message, N-th message.
struct Marks {
    t0: Instant,
    u0: Usage,
    first: Mutex<Option<(Instant, Usage)>>,
}

impl Marks {
    fn new() -> Self {
        Marks {
            t0: Instant::now(),
            u0: usage(),
            first: Mutex::new(None),
        }
    }
    fn first_message(&self) {
        *self.first.lock().unwrap() = Some((Instant::now(), usage()));
    }
    fn report(&self, client: &str, n: u64, received: u64, bytes: u64) {
        let t_end = Instant::now();
        let u = usage();
        let (tf, uf) = self.first.lock().unwrap().unwrap_or((t_end, u));
        let cpu = u.user + u.sys;
        let cpu_first = cpu - (uf.user + uf.sys);
        println!(
            "RESULT client={client} n={n} received={received} bytes={bytes} \
             cpu_total={cpu:.3} user={:.3} sys={:.3} cpu_per_100k={:.3} \
             cpu_first_to_last={cpu_first:.3} wall_total={:.3} wall_first_to_last={:.3} \
             vcsw={} ivcsw={}",
            u.user,
            u.sys,
            cpu * 100_000.0 / n as f64,
            (t_end - self.t0).as_secs_f64(),
            (t_end - tf).as_secs_f64(),
            u.nvcsw - self.u0.nvcsw,
            u.nivcsw - self.u0.nivcsw,
        );
        println!("THREADS client={client} {}", threads());
        std::io::stdout().flush().ok();
    }
}

fn ready() {
    println!("READY");
    std::io::stdout().flush().ok();
}

// ---------------------------------------------------------------- paho

fn sub_paho(n: u64) {
    use paho_mqtt as mqtt;
    let marks = Arc::new(Marks::new());
    let create = mqtt::CreateOptionsBuilder::new()
        .server_uri(format!("tcp://127.0.0.1:{}", port()))
        .client_id(format!("cost-paho-{}", std::process::id()))
        .persistence(None)
        .finalize();
    let cli = mqtt::AsyncClient::new(create).expect("create paho client");
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    {
        let count = count.clone();
        let bytes = bytes.clone();
        let marks = marks.clone();
        cli.set_message_callback(move |_, msg| {
            if let Some(msg) = msg {
                bytes.fetch_add(msg.payload().len() as u64, Ordering::Relaxed);
                let c = count.fetch_add(1, Ordering::Relaxed) + 1;
                if c == 1 {
                    marks.first_message();
                }
                if c == n {
                    let _ = tx.send(());
                }
            }
        });
    }
    let opts = mqtt::ConnectOptionsBuilder::new()
        .clean_session(true)
        .keep_alive_interval(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(5))
        .finalize();
    cli.connect(opts).wait().expect("paho connect");
    cli.subscribe(TOPIC_FILTER, 1)
        .wait()
        .expect("paho subscribe");
    ready();
    let ok = rx.recv_timeout(timeout()).is_ok();
    marks.report(
        "paho",
        n,
        count.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
    );
    let _ = cli.disconnect(None).wait();
    exit_unless(ok, "paho");
}

// ---------------------------------------------------------------- rumqttc

fn rumqttc_opts(id: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port());
    o.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true);
    o
}

/// What a rumqttc subscriber counts, whichever API drives its event loop.
struct Tally {
    n: u64,
    count: u64,
    bytes: u64,
    marks: Marks,
}

impl Tally {
    fn new(n: u64) -> Self {
        Tally {
            n,
            count: 0,
            bytes: 0,
            marks: Marks::new(),
        }
    }

    /// Takes one event of the loop: `Some(true)` once the N-th message is in,
    /// `Some(false)` when the connection failed, `None` to go on.
    fn take(
        &mut self,
        ev: Result<rumqttc::Event, rumqttc::ConnectionError>,
        client: &str,
    ) -> Option<bool> {
        use rumqttc::{Event, Packet};
        match ev {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                self.bytes += p.payload.len() as u64;
                self.count += 1;
                if self.count == 1 {
                    self.marks.first_message();
                }
                (self.count == self.n).then_some(true)
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                ready();
                None
            }
            Ok(_) => None,
            Err(e) => {
                eprintln!("{client}: {e}");
                Some(false)
            }
        }
    }

    /// Reports before the disconnect, as for paho.
    fn report(&self, client: &str) {
        self.marks.report(client, self.n, self.count, self.bytes);
    }
}

fn exit_unless(ok: bool, client: &str) {
    if !ok {
        eprintln!("{client}: timed out / failed");
        std::process::exit(2);
    }
}

fn sub_rumqttc_async(n: u64) {
    use rumqttc::{AsyncClient, QoS};
    const CLIENT: &str = "rumqttc-async";
    let mut tally = Tally::new(n);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async {
        let (client, mut el) = AsyncClient::new(
            rumqttc_opts(&format!("cost-rumqttc-{}", std::process::id())),
            10,
        );
        client
            .try_subscribe(TOPIC_FILTER, QoS::AtLeastOnce)
            .unwrap();
        let deadline = tokio::time::Instant::now() + timeout();
        let ok = loop {
            let Ok(ev) = tokio::time::timeout_at(deadline, el.poll()).await else {
                break false;
            };
            if let Some(ok) = tally.take(ev, CLIENT) {
                break ok;
            }
        };
        tally.report(CLIENT);
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while el.poll().await.is_ok() {}
        })
        .await;
        ok
    });
    exit_unless(ok, CLIENT);
}

fn sub_rumqttc_sync(n: u64) {
    use rumqttc::{Client, QoS};
    const CLIENT: &str = "rumqttc-sync";
    let mut tally = Tally::new(n);
    let (client, mut conn) = Client::new(
        rumqttc_opts(&format!("cost-rumqttc-sync-{}", std::process::id())),
        10,
    );
    client.subscribe(TOPIC_FILTER, QoS::AtLeastOnce).unwrap();
    let deadline = Instant::now() + timeout();
    let ok = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(ev) = conn.recv_timeout(left) else {
            break false;
        };
        if let Some(ok) = tally.take(ev, CLIENT) {
            break ok;
        }
    };
    tally.report(CLIENT);
    let _ = client.disconnect();
    for _ in 0..5 {
        if conn.recv_timeout(Duration::from_millis(200)).is_err() {
            break;
        }
    }
    exit_unless(ok, CLIENT);
}

// ---------------------------------------------------------------- publisher

fn payload(seq: u64, m: usize) -> Vec<u8> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let mut s = format!(
        "{{\"cnc_id\":\"m{m:02}\",\"seq\":{seq},\"ts\":{ts},\"spindle_speed\":{:.1},\
         \"feed_rate\":{:.1},\"axes\":{{\"x\":{:.3},\"y\":{:.3},\"z\":{:.3}}},\
         \"program\":\"O1234\",\"status\":\"RUNNING\",\"pad\":\"",
        8000.0 + (seq % 977) as f64 * 1.5,
        1200.0 + (seq % 313) as f64 * 0.25,
        (seq % 1000) as f64 * 0.125,
        -(seq as f64 % 500.0) * 0.25,
        12.5 + (seq % 37) as f64 * 0.01,
    );
    while s.len() < PAYLOAD_LEN - 2 {
        s.push('x');
    }
    s.push_str("\"}");
    s.into_bytes()
}

fn publish(n: u64, rate: f64) {
    use rumqttc::{Client, Event, Packet, QoS};
    let mut o = rumqttc_opts(&format!("cost-pub-{}", std::process::id()));
    o.set_inflight(100);
    let (client, mut conn) = Client::new(o, 100);
    let t0 = Instant::now();
    let pubber = std::thread::spawn(move || {
        let interval = if rate > 0.0 {
            Some(Duration::from_secs_f64(1.0 / rate))
        } else {
            None
        };
        let start = Instant::now();
        for i in 0..n {
            if let Some(iv) = interval {
                let deadline = start + iv * i as u32;
                let now = Instant::now();
                if deadline > now {
                    std::thread::sleep(deadline - now);
                }
            }
            let m = (i as usize) % MACHINES;
            client
                .publish(
                    format!("bench/cost/m{m:02}"),
                    QoS::AtLeastOnce,
                    false,
                    payload(i, m),
                )
                .expect("publish");
        }
        client
    });
    let mut acked = 0u64;
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                if acked == n {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("publisher: {e}");
                std::process::exit(2);
            }
        }
    }
    let client = pubber.join().unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let _ = client.disconnect();
    for _ in 0..5 {
        if conn.recv_timeout(Duration::from_millis(200)).is_err() {
            break;
        }
    }
    let u = usage();
    println!(
        "PUBLISHED n={n} acked={acked} payload_bytes={} wall={wall:.3} rate={:.0}/s pub_cpu={:.3}",
        payload(0, 0).len(),
        n as f64 / wall,
        u.user + u.sys
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("");
    let n: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100_000);
    match cmd {
        "publish" => publish(n, args.get(3).and_then(|v| v.parse().ok()).unwrap_or(0.0)),
        "sub-paho" => sub_paho(n),
        "sub-rumqttc" => sub_rumqttc_async(n),
        "sub-rumqttc-sync" => sub_rumqttc_sync(n),
        "payload" => println!("{}", String::from_utf8(payload(123, 7)).unwrap()),
        _ => {
            eprintln!("usage: mqtt-client-cost publish N [RATE] | sub-paho N | sub-rumqttc N | sub-rumqttc-sync N");
            std::process::exit(1);
        }
    }
}
