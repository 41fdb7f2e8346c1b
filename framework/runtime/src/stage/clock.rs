//! A stage's event-time clock, as pure functions of what arrived and the
//! time (unit-tested with an injected clock, beside `gather`): each
//! input's watermark, the stage's own (the minimum over the inputs that
//! are not idle), and the watermark its outputs carry.

use std::time::{Duration, Instant};

use rill_core::window::{BEFORE_TIME, END_OF_TIME, WatermarkSpec};
use serde::{Deserialize, Serialize};

/// What a stage commits of its clock (under `m/clock`): restarted, it
/// neither goes back in event time nor sends a watermark twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Clock {
    /// Each input's latest watermark ([`END_OF_TIME`] once it ended).
    pub inputs: Vec<i64>,
    /// The highest event time the stage emitted (sources and stages that
    /// assign timestamps derive their watermark from it).
    pub max_emitted: i64,
    /// The watermark last given to the node.
    pub given: i64,
    /// The watermark last appended to the outputs.
    pub sent: i64,
}

impl Clock {
    pub fn new(inputs: usize) -> Clock {
        Clock {
            inputs: vec![BEFORE_TIME; inputs],
            max_emitted: BEFORE_TIME,
            given: BEFORE_TIME,
            sent: BEFORE_TIME,
        }
    }

    /// Input `i` says its watermark is `time` (watermarks never go back).
    pub fn arrive(&mut self, i: usize, time: i64) {
        if let Some(w) = self.inputs.get_mut(i) {
            *w = (*w).max(time);
        }
    }

    /// The stage's input watermark: the minimum over the inputs that are
    /// not idle (every input idle: the most advanced of them, so a quiet
    /// pipeline keeps what it knows), never below what was given before.
    pub fn input_watermark(&self, idle: &[bool]) -> i64 {
        let active = self
            .inputs
            .iter()
            .zip(idle.iter().chain(std::iter::repeat(&false)))
            .filter(|(w, idle)| !**idle || **w == END_OF_TIME)
            .map(|(w, _)| *w)
            .min();
        let w = match active {
            Some(w) => w,
            None => self.inputs.iter().copied().max().unwrap_or(BEFORE_TIME),
        };
        w.max(self.given)
    }

    /// The watermark the outputs carry: derived from the event times
    /// emitted (`own`: a source, or a stage that assigns timestamps), else
    /// the one given to the node.
    pub fn output_watermark(&self, own: bool, spec: &WatermarkSpec) -> i64 {
        if own {
            spec.behind(self.max_emitted)
        } else {
            self.given
        }
    }

    pub fn emitted(&mut self, times: impl Iterator<Item = i64>) {
        if let Some(m) = times.max() {
            self.max_emitted = self.max_emitted.max(m);
        }
    }
}

/// Which inputs have been silent longer than `idle_timeout` at `now`
/// (an ended input is never idle: it holds nothing back).
pub(crate) fn idle(last_heard: &[Instant], idle_timeout: Duration, now: Instant) -> Vec<bool> {
    last_heard
        .iter()
        .map(|t| now.saturating_duration_since(*t) >= idle_timeout)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_input_holds_the_stage_back_until_it_idles() {
        let mut c = Clock::new(2);
        assert_eq!(c.input_watermark(&[false, false]), BEFORE_TIME);
        c.arrive(0, 100);
        assert_eq!(c.input_watermark(&[false, false]), BEFORE_TIME);
        c.arrive(1, 40);
        assert_eq!(c.input_watermark(&[false, false]), 40);
        c.arrive(1, 10); // never back
        assert_eq!(c.input_watermark(&[false, false]), 40);
        // input 1 went quiet: input 0 alone decides
        assert_eq!(c.input_watermark(&[false, true]), 100);
        c.given = 100;
        // and the stage does not go back when input 1 speaks again
        assert_eq!(c.input_watermark(&[false, false]), 100);
        // both idle: the most advanced
        c.arrive(0, 150);
        assert_eq!(c.input_watermark(&[true, true]), 150);
        // an ended input holds nothing back
        c.arrive(1, END_OF_TIME);
        assert_eq!(c.input_watermark(&[false, false]), 150);
        c.arrive(0, END_OF_TIME);
        assert_eq!(c.input_watermark(&[false, true]), END_OF_TIME);
    }

    #[test]
    fn a_source_stays_behind_its_highest_event_time() {
        let spec = WatermarkSpec {
            max_out_of_orderness: rill_core::window::Secs(5_000),
            ..Default::default()
        };
        let mut c = Clock::new(0);
        assert_eq!(c.output_watermark(true, &spec), BEFORE_TIME);
        c.emitted([10_000, 30_000, 20_000].into_iter());
        assert_eq!(c.output_watermark(true, &spec), 25_000);
        c.emitted(std::iter::empty());
        assert_eq!(c.output_watermark(true, &spec), 25_000);
        assert_eq!(c.output_watermark(false, &spec), BEFORE_TIME);
    }

    #[test]
    fn idleness_is_processing_time_since_last_heard() {
        let t0 = Instant::now();
        let heard = [t0, t0 + Duration::from_secs(20)];
        let now = t0 + Duration::from_secs(31);
        assert_eq!(idle(&heard, Duration::from_secs(30), now), [true, false]);
    }
}
