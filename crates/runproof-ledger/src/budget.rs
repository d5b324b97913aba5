//! Budgets: reserve an estimate before spending, settle with the real cost.
//!
//! All state sits behind one mutex, so concurrent reservations can never
//! together reserve more than the limit. The rules:
//!
//! - A request whose estimate fits in what remains (limit − spent − reserved)
//!   is admitted with that estimate reserved.
//! - When what remains is positive but smaller than the estimate, exactly one
//!   request at a time may take all of it (the *tail* request); others are
//!   refused until it settles. This spends the last cents without letting
//!   many requests overrun together.
//! - A stream grows its reservation as its running cost rises
//!   ([`Reservation::try_grow`]); when it cannot grow, the caller cuts the
//!   stream, so a stream overshoots by at most the event that crossed.
//! - Settling replaces the reservation with the real cost. Once spent reaches
//!   the limit the budget is exhausted and everything is refused.
//!
//! Reservations alone never exceed the limit, so overshoot comes only from
//! requests whose real cost exceeds their reservation: a stream by at most the
//! one event that crossed, a non-streaming response (which cannot be cut
//! halfway) by its own overrun. Sequentially that is one request; with N
//! requests in flight it is at most the N overruns, tested below.

use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "budget exhausted: spent ${spent:.4} of ${limit:.4}; raise --budget or start a new run"
    )]
    Exhausted { spent: f64, limit: f64 },
    #[error(
        "budget nearly spent: ${remaining:.4} left of ${limit:.4} and the last of it is held by a request in flight; retry when it finishes"
    )]
    TailBusy { remaining: f64, limit: f64 },
}

/// Amounts are kept in integer nano-dollars so that thousands of small
/// reservations add up exactly (floating-point sums drift).
#[derive(Debug, Default)]
struct State {
    spent: i64,
    reserved: i64,
    tail_busy: bool,
}

const NANO: f64 = 1e9;

fn to_nano(usd: f64) -> i64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * NANO).round().min(i64::MAX as f64 / 4.0) as i64
    } else {
        0
    }
}

fn to_usd(nano: i64) -> f64 {
    nano as f64 / NANO
}

/// A spending limit in USD (or none: unlimited, still accounted).
#[derive(Debug)]
pub struct Budget {
    limit: Option<i64>,
    state: Mutex<State>,
}

/// A snapshot for reports.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct BudgetStatus {
    pub limit: Option<f64>,
    pub spent: f64,
    pub reserved: f64,
}

impl Budget {
    pub fn new(limit_usd: Option<f64>) -> Arc<Budget> {
        Arc::new(Budget {
            limit: limit_usd.map(|l| {
                if l.is_finite() && l > 0.0 {
                    to_nano(l)
                } else {
                    0
                }
            }),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn limit(&self) -> Option<f64> {
        self.limit.map(to_usd)
    }

    pub fn status(&self) -> BudgetStatus {
        let s = self.lock();
        BudgetStatus {
            limit: self.limit.map(to_usd),
            spent: to_usd(s.spent),
            reserved: to_usd(s.reserved),
        }
    }

    pub fn is_exhausted(&self) -> bool {
        match self.limit {
            Some(l) => self.lock().spent >= l,
            None => false,
        }
    }

    /// Reserve `estimate` USD for a request about to be sent.
    pub fn reserve(self: &Arc<Self>, estimate: f64) -> Result<Reservation, BudgetError> {
        let estimate = to_nano(estimate);
        let mut s = self.lock();
        let mut tail = false;
        let amount = match self.limit {
            None => estimate,
            Some(limit) => {
                let remaining = limit - s.spent - s.reserved;
                if s.spent >= limit || (remaining <= 0 && !s.tail_busy) {
                    return Err(BudgetError::Exhausted {
                        spent: to_usd(s.spent),
                        limit: to_usd(limit),
                    });
                }
                if estimate <= remaining {
                    estimate
                } else if !s.tail_busy && remaining > 0 {
                    tail = true;
                    s.tail_busy = true;
                    remaining
                } else {
                    return Err(BudgetError::TailBusy {
                        remaining: to_usd(remaining.max(0)),
                        limit: to_usd(limit),
                    });
                }
            }
        };
        s.reserved += amount;
        Ok(Reservation {
            budget: self.clone(),
            amount,
            tail,
            settled: false,
        })
    }

    /// Charge a cost that had no reservation (compute time, for example).
    pub fn charge(&self, usd: f64) {
        self.lock().spent += to_nano(usd);
    }
}

/// Money held for one request until it is settled. Dropping an unsettled
/// reservation charges the whole reserved amount (never loses a charge).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    amount: i64,
    tail: bool,
    settled: bool,
}

impl Reservation {
    pub fn amount(&self) -> f64 {
        to_usd(self.amount)
    }

    /// Grow the reservation to `to` USD if the budget allows. False means the
    /// caller must stop spending (cut the stream).
    pub fn try_grow(&mut self, to: f64) -> bool {
        let to = to_nano(to);
        if to <= self.amount {
            return true;
        }
        let Some(limit) = self.budget.limit else {
            let mut s = self.budget.lock();
            s.reserved += to - self.amount;
            self.amount = to;
            return true;
        };
        let mut s = self.budget.lock();
        let remaining = limit - s.spent - s.reserved;
        let need = to - self.amount;
        if need <= remaining {
            s.reserved += need;
            self.amount = to;
            true
        } else {
            false
        }
    }

    /// Replace the reservation by the real cost.
    pub fn settle(mut self, actual: f64) {
        let actual = if actual.is_finite() {
            to_nano(actual)
        } else {
            self.amount
        };
        self.finish(actual);
    }

    fn finish(&mut self, actual: i64) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut s = self.budget.lock();
        s.reserved = (s.reserved - self.amount).max(0);
        s.spent += actual;
        if self.tail {
            s.tail_busy = false;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let amount = self.amount;
        self.finish(amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_settle_and_exhaust() {
        let b = Budget::new(Some(1.0));
        let r = b.reserve(0.4).unwrap();
        assert_eq!(b.status().reserved, 0.4);
        r.settle(0.5);
        assert_eq!(b.status().spent, 0.5);
        assert_eq!(b.status().reserved, 0.0);
        // 0.5 left; estimate 0.8 does not fit: admitted as the tail request.
        let tail = b.reserve(0.8).unwrap();
        assert!((tail.amount() - 0.5).abs() < 1e-12);
        // The last cents are held by the tail request: others wait.
        assert!(matches!(b.reserve(0.01), Err(BudgetError::TailBusy { .. })));
        tail.settle(0.7); // a non-streaming overrun: bounded by this one request
        assert!(b.is_exhausted());
        assert!(matches!(b.reserve(0.0), Err(BudgetError::Exhausted { .. })));
    }

    #[test]
    fn only_one_tail_request_at_a_time() {
        let b = Budget::new(Some(1.0));
        let a = b.reserve(0.9).unwrap();
        let t = b.reserve(0.5).unwrap(); // takes the last 0.1
        assert!((t.amount() - 0.1).abs() < 1e-12);
        assert!(matches!(
            b.reserve(0.5),
            Err(BudgetError::Exhausted { .. }) | Err(BudgetError::TailBusy { .. })
        ));
        a.settle(0.2);
        // 0.7 freed: a fitting request is admitted while the tail is busy.
        assert!(b.reserve(0.3).is_ok());
        drop(t);
    }

    #[test]
    fn streams_grow_until_the_budget_is_reached() {
        let b = Budget::new(Some(1.0));
        let mut r = b.reserve(0.1).unwrap();
        assert!(r.try_grow(0.6));
        assert!(r.try_grow(1.0));
        assert!(!r.try_grow(1.01));
        r.settle(1.0);
        assert!(b.is_exhausted());
    }

    #[test]
    fn dropping_an_unsettled_reservation_charges_it() {
        let b = Budget::new(None);
        drop(b.reserve(0.25).unwrap());
        assert_eq!(b.status().spent, 0.25);
        assert_eq!(b.status().reserved, 0.0);
    }

    #[test]
    fn many_concurrent_reservations_never_overspend() {
        for _round in 0..20 {
            let b = Budget::new(Some(10.0));
            let admitted = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|sc| {
                for _ in 0..32 {
                    sc.spawn(|| {
                        for _ in 0..50 {
                            if let Ok(r) = b.reserve(0.01) {
                                admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                // Actual cost equal to the estimate.
                                let a = r.amount();
                                std::thread::yield_now();
                                r.settle(a);
                            }
                        }
                    });
                }
            });
            let st = b.status();
            assert_eq!(st.reserved, 0.0);
            assert!(st.spent <= 10.0 + 1e-9, "overspent: {}", st.spent);
            // 1600 attempts at 0.01 against 10.0: exactly 1000 fit (±1 for
            // floating-point rounding at the tail).
            let n = admitted.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(n, 1000, "admitted");
            assert!(st.spent > 9.99 - 1e-9, "under-admitted: {}", st.spent);
        }
    }

    #[test]
    fn concurrent_overruns_are_bounded_by_one_request() {
        // Each request is estimated at 0.01 but really costs 0.02. With the
        // reservation rule, spent can exceed the limit by at most the overrun
        // of the requests admitted against money that was really there.
        let b = Budget::new(Some(1.0));
        std::thread::scope(|sc| {
            for _ in 0..16 {
                sc.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(r) = b.reserve(0.01) {
                            r.settle(0.02);
                        }
                    }
                });
            }
        });
        let st = b.status();
        // At most 16 requests can be in flight, each overrunning by 0.01.
        assert!(st.spent <= 1.0 + 16.0 * 0.01 + 1e-9, "spent {}", st.spent);
        assert!(b.is_exhausted());
    }
}
