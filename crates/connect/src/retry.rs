//! The retry schedule: configured steps, bounded jitter, and the vendor's `Retry-After` winning
//! when it asks for longer.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// Delay before attempt 2, 3, ... ; its length bounds the number of retries.
    pub steps: Vec<Duration>,
    /// Fraction of each step added or removed at random, e.g. 0.2 for ±20 %.
    pub jitter: f64,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self { steps: vec![s(1), s(5), s(30), s(120), s(600), s(1800), s(3600), s(3 * 3600)], jitter: 0.2 }
    }
}

impl RetrySchedule {
    /// Total attempts allowed: the first one plus one per step.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.steps.len()).unwrap_or(u32::MAX).saturating_add(1)
    }

    /// Delay before the next attempt after `attempts_made` failed attempts, or `None` when the
    /// schedule is exhausted. A vendor's `retry_after` larger than the step wins (no jitter below it).
    pub fn next_delay(&self, attempts_made: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let idx = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
        let step = *self.steps.get(idx)?;
        let jittered = self.jittered(step, &mut rand::thread_rng());
        Some(match retry_after {
            Some(ra) if ra > jittered => ra,
            _ => jittered,
        })
    }

    fn jittered(&self, step: Duration, rng: &mut impl Rng) -> Duration {
        if self.jitter <= 0.0 {
            return step;
        }
        let factor = 1.0 + rng.gen_range(-self.jitter..=self.jitter);
        step.mul_f64(factor.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_stop_after_the_last_step() {
        let s = RetrySchedule { steps: vec![Duration::from_secs(1), Duration::from_secs(5)], jitter: 0.0 };
        assert_eq!(s.max_attempts(), 3);
        assert_eq!(s.next_delay(1, None), Some(Duration::from_secs(1)));
        assert_eq!(s.next_delay(2, None), Some(Duration::from_secs(5)));
        assert_eq!(s.next_delay(3, None), None);
        assert_eq!(s.next_delay(0, None), None);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let s = RetrySchedule::default();
        for attempt in 1..=s.steps.len() as u32 {
            let step = s.steps[attempt as usize - 1];
            for _ in 0..200 {
                let d = s.next_delay(attempt, None).unwrap();
                assert!(d >= step.mul_f64(0.8) && d <= step.mul_f64(1.2), "{d:?} vs {step:?}");
            }
        }
    }

    #[test]
    fn larger_retry_after_wins_smaller_does_not() {
        let s = RetrySchedule { steps: vec![Duration::from_secs(5)], jitter: 0.2 };
        assert_eq!(s.next_delay(1, Some(Duration::from_secs(30))), Some(Duration::from_secs(30)));
        let d = s.next_delay(1, Some(Duration::from_secs(1))).unwrap();
        assert!(d >= Duration::from_secs(4));
    }
}
