//! The simulated fleet: which machines there are, and how each one behaves from
//! one message to the next.

use crate::split_mix::SplitMix64;

/// The plugin class a simulated machine is mapped to; its messages differ by class
/// as real controllers' do.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum MachineClass {
    TypeA,
    TypeB,
}

impl MachineClass {
    pub fn class_name(self) -> &'static str {
        match self {
            MachineClass::TypeA => "CNCTypeA",
            MachineClass::TypeB => "CNCTypeB",
        }
    }
}

/// Machine `i` (1-based) of the fleet: `SIM-A-{i:04}` of class CNCTypeA for odd i,
/// `SIM-B-{i:04}` of class CNCTypeB for even i (the help of `generate` says so).
pub fn id_and_class(i: u32) -> (String, MachineClass) {
    if i % 2 == 1 {
        (format!("SIM-A-{i:04}"), MachineClass::TypeA)
    } else {
        (format!("SIM-B-{i:04}"), MachineClass::TypeB)
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Status {
    Running,
    Idle,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Idle => "idle",
            Status::Error => "error",
        }
    }
}

const AXIS_MAX: f64 = 500.0;

/// One simulated machine. State carries over between its messages (a program
/// runs for a while, axes move along a path, parts accumulate) so that the
/// data looks like a machine rather than noise.
pub struct Machine {
    pub cnc_id: String,
    pub class: MachineClass,
    pub status: Status,
    pub program: u32,
    /// Messages left before the current part is finished.
    cycle_left: u32,
    target_spin: u32,
    feed: f64,
    pub x: f64,
    pub y: f64,
    dx: f64,
    dy: f64,
    pub part_count: u64,
    /// Messages reported so far, this one included.
    pub messages: u64,
}

impl Machine {
    pub fn new(i: u32, rng: &mut SplitMix64) -> Self {
        let (cnc_id, class) = id_and_class(i);
        let mut m = Machine {
            cnc_id,
            class,
            status: Status::Running,
            program: 1,
            cycle_left: 0,
            target_spin: 0,
            feed: 0.0,
            x: rng.range(0.0, AXIS_MAX),
            y: rng.range(0.0, AXIS_MAX),
            dx: 0.0,
            dy: 0.0,
            part_count: rng.below(500),
            messages: 0,
        };
        m.load_program(rng);
        m
    }

    fn load_program(&mut self, rng: &mut SplitMix64) {
        self.program = 1 + rng.below(20) as u32;
        self.cycle_left = 10 + rng.below(30) as u32;
        self.target_spin = 100 * (8 + rng.below(113) as u32);
        self.feed = (rng.range(100.0, 2000.0) * 10.0).round() / 10.0;
        self.dx = rng.range(-12.0, 12.0);
        self.dy = rng.range(-12.0, 12.0);
    }

    /// Advances the machine by one reporting interval.
    pub fn step(&mut self, rng: &mut SplitMix64) {
        self.messages += 1;
        // Sticky states with rare transitions: mostly running, short idle
        // spells between jobs, and errors that get cleared by an operator.
        self.status = match self.status {
            Status::Running if rng.chance(0.02) => Status::Idle,
            Status::Running if rng.chance(0.005) => Status::Error,
            Status::Idle if rng.chance(0.25) => Status::Running,
            Status::Error if rng.chance(0.15) => Status::Idle,
            s => s,
        };
        if self.status != Status::Running {
            return;
        }
        self.x += self.dx + rng.range(-1.0, 1.0);
        self.y += self.dy + rng.range(-1.0, 1.0);
        // Bounce off the travel limits so the tool path stays on the table.
        if !(0.0..=AXIS_MAX).contains(&self.x) {
            self.dx = -self.dx;
            self.x = self.x.clamp(0.0, AXIS_MAX);
        }
        if !(0.0..=AXIS_MAX).contains(&self.y) {
            self.dy = -self.dy;
            self.y = self.y.clamp(0.0, AXIS_MAX);
        }
        self.cycle_left = self.cycle_left.saturating_sub(1);
        if self.cycle_left == 0 {
            self.part_count += 1;
            if rng.chance(0.2) {
                self.load_program(rng);
            } else {
                self.cycle_left = 10 + rng.below(30) as u32;
            }
        }
    }

    /// The spindle speed this message reports: the program's, with a little
    /// jitter, while running; 0 otherwise.
    pub fn spin(&self, rng: &mut SplitMix64) -> u32 {
        match self.status {
            Status::Running => {
                let jitter = rng.range(-0.02, 0.02) * self.target_spin as f64;
                (self.target_spin as f64 + jitter).round() as u32
            }
            Status::Idle | Status::Error => 0,
        }
    }

    /// The feed rate this message reports: 0 unless running.
    pub fn reported_feed(&self) -> f64 {
        match self.status {
            Status::Running => self.feed,
            Status::Idle | Status::Error => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Machine, AXIS_MAX};
    use crate::split_mix::SplitMix64;

    #[test]
    fn the_tool_stays_on_the_table() {
        let mut rng = SplitMix64(3);
        let mut fleet: Vec<Machine> = (1..=4).map(|i| Machine::new(i, &mut rng)).collect();
        for _ in 0..5_000 {
            for m in &mut fleet {
                m.step(&mut rng);
                assert!((0.0..=AXIS_MAX).contains(&m.x), "x = {}", m.x);
                assert!((0.0..=AXIS_MAX).contains(&m.y), "y = {}", m.y);
            }
        }
    }
}
