//! What the binary protocol (prepared statements, as the collector's sink writes)
//! costs the server against the text protocol (the values as SQL literals, as the
//! stock `mariadb` client sends them), for the same multi-row INSERTs through the same
//! driver: the `cnc_data` rows of a source database, copied in id order into a target
//! database in transactions of BATCH rows, each with the position row, as a batch
//! commits. `BENCH_MODE=drain scripts/bench.sh` runs it; it prints
//! `rows N seconds S`.
//!
//!     cargo run --release --example protocol_ab -- \
//!         mysql://root@127.0.0.1:3306 SOURCE_DB TARGET_DB binary|text BATCH ROWS_PER_STATEMENT

use std::{collections::HashMap, process::exit, time::Instant};

use mysql::{prelude::Queryable, Conn, Opts, OptsBuilder, Statement, TxOpts, Value};

type Row = (String, String, i64, String);

fn usage(why: &str) -> ! {
    eprintln!(
        "protocol_ab: {why}\nusage: protocol_ab MYSQL_URL SOURCE_DB TARGET_DB binary|text BATCH ROWS_PER_STATEMENT"
    );
    exit(2)
}

fn connect(url: &str, db: &str) -> Conn {
    let opts = Opts::from_url(url).unwrap_or_else(|e| usage(&format!("MYSQL_URL {url:?}: {e}")));
    let opts = OptsBuilder::from_opts(opts)
        .db_name(Some(db))
        .prefer_socket(false);
    let mut conn = Conn::new(opts).unwrap_or_else(|e| {
        eprintln!("protocol_ab: cannot connect to {url} (database {db}): {e}");
        exit(1)
    });
    // The collector's session (host/src/sink/mysql/connection.rs, connect_to).
    conn.query_drop("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
        .expect("sql_mode can be set");
    conn
}

fn insert_sql(rows: usize, literals: Option<&[Row]>) -> String {
    let mut sql =
        String::from("INSERT INTO cnc_data (cnc_id,part_program,timestamp,json_data) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        match literals {
            None => sql.push_str("(?,?,?,?)"),
            Some(r) => {
                let (c, p, t, j) = &r[i];
                sql.push('(');
                for (k, v) in [
                    Value::from(c.as_str()),
                    Value::from(p.as_str()),
                    Value::from(*t),
                    Value::from(j.as_str()),
                ]
                .iter()
                .enumerate()
                {
                    if k > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&v.as_sql(false));
                }
                sql.push(')');
            }
        }
    }
    sql
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, source, target, mode, batch, per] = args.as_slice() else {
        usage("six arguments expected")
    };
    let binary = match mode.as_str() {
        "binary" => true,
        "text" => false,
        other => usage(&format!("mode must be binary or text, not {other:?}")),
    };
    let batch: usize = batch
        .parse()
        .ok()
        .filter(|&b| b > 0)
        .unwrap_or_else(|| usage("BATCH must be a whole number > 0"));
    let per: usize = per
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or_else(|| usage("ROWS_PER_STATEMENT must be a whole number > 0"));

    let rows: Vec<Row> = connect(url, source)
        .query("SELECT cnc_id, part_program, timestamp, json_data FROM cnc_data ORDER BY id")
        .unwrap_or_else(|e| {
            eprintln!("protocol_ab: cannot read cnc_data of {source}: {e}");
            exit(1)
        });
    let mut conn = connect(url, target);
    let mut prepared: HashMap<usize, Statement> = HashMap::new();
    let started = Instant::now();
    for (b, chunk) in rows.chunks(batch).enumerate() {
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .expect("a transaction starts");
        for part in chunk.chunks(per) {
            if binary {
                let stmt = match prepared.get(&part.len()) {
                    Some(s) => s.clone(),
                    None => {
                        let s = tx.prep(insert_sql(part.len(), None)).expect("prepares");
                        prepared.insert(part.len(), s.clone());
                        s
                    }
                };
                let params: Vec<Value> = part
                    .iter()
                    .flat_map(|(c, p, t, j)| {
                        [
                            Value::from(c.as_str()),
                            Value::from(p.as_str()),
                            Value::from(*t),
                            Value::from(j.as_str()),
                        ]
                    })
                    .collect();
                tx.exec_drop(&stmt, params)
                    .expect("the binary INSERT succeeds");
            } else {
                tx.query_drop(insert_sql(part.len(), Some(part)))
                    .expect("the text INSERT succeeds");
            }
        }
        tx.exec_drop(
            "INSERT INTO collector_position (client_id, last_seq) VALUES ('protocol_ab', ?) \
             ON DUPLICATE KEY UPDATE last_seq = VALUES(last_seq)",
            (b as u64,),
        )
        .expect("the position row is written");
        tx.commit().expect("commits");
    }
    println!(
        "rows {} seconds {:.3}",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
}
