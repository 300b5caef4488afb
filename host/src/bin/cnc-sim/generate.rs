//! `generate`: realistic messages for a fleet of simulated machines, round-robin.

use mes_collector::intake::config::BrokerConfig;

use crate::cli::SendArgs;
use crate::failure::{fail, Result};
use crate::machine::Machine;
use crate::message::message_for;
use crate::publisher::Publisher;
use crate::split_mix::SplitMix64;

pub fn generate(
    broker: &BrokerConfig,
    send: &SendArgs,
    machines: u32,
    count: u64,
    start_seq: u64,
    seed: u64,
) -> Result<()> {
    if start_seq.checked_add(count).is_none() {
        return fail("--start-seq plus --count overflows the sequence number");
    }
    let mut rng = SplitMix64(seed);
    let mut fleet: Vec<Machine> = (1..=machines).map(|i| Machine::new(i, &mut rng)).collect();
    let mut publisher = Publisher::new(broker, send)?;
    for k in 0..count {
        let m = &mut fleet[(k % machines as u64) as usize];
        m.step(&mut rng);
        if !publisher.send(|| message_for(m, &mut rng, start_seq + k)) {
            break;
        }
    }
    publisher.finish()
}
