//! The collector's HTTP endpoints, as a monitoring system reads them.

use std::{
    io::{Read, Write},
    net::TcpStream,
};

use super::Collector;

/// The address the collector logged for its metrics endpoint.
pub fn metrics_addr(collector: &Collector) -> String {
    let log = collector.log();
    let line = log
        .lines()
        .find(|l| l.contains("metrics on http://"))
        .unwrap_or_else(|| panic!("no metrics line in:\n{log}"));
    let start = line.find("http://").unwrap() + "http://".len();
    line[start..].split('/').next().unwrap().to_string()
}

/// (status, body) of a plain HTTP/1.0 GET.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
