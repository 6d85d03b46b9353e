//! The link probe of one worker connection, as a state machine: time and the worker's answers
//! in (`handle_*`), messages to send and measurements out (`poll_action`). The connection task
//! (`ws`) carries it out; nothing here touches a socket or reads a clock.
//!
//! A probe is: a few pings (the round trip, taken off every transfer time), then legs down
//! (supervisor to worker) and then up, each of binary payload. The first leg is small; a leg
//! that took under [`ProbeConfig::grow_below`] is followed by one four times larger, up to
//! [`ProbeConfig::max_bytes`]. So a slow link is measured in about a second, with little data
//! queued ahead of its heartbeats, and a fast one over megabytes. Every leg has a time limit
//! (the loss bound); a leg cut short gives a lower bound from what arrived.
//!
//! What the worker says is checked: an answer with a nonce that was not asked for, a digest
//! that does not match what was sent, binary frames not asked for or beyond what was asked:
//! each is a [`Violation`], and the connection closes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::proto::{self, SupervisorMsg, WorkerMsg};
use crate::sched::Link;

/// How a connection probes its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Between the end of one probe and the start of the next.
    pub every: Duration,
    /// Most time one leg may take (the worker is told, and stops there).
    pub leg_timeout: Duration,
    /// The first leg's size each way.
    pub first_bytes: u64,
    /// The largest leg.
    pub max_bytes: u64,
    /// A leg faster than this is followed by one four times larger.
    pub grow_below: Duration,
    /// Round trips measured before the legs (the fastest counts).
    pub pings: u32,
}

impl ProbeConfig {
    /// A probe every `every`, each leg bounded by `leg_timeout` (the loss bound).
    pub fn new(every: Duration, leg_timeout: Duration) -> Self {
        Self {
            every,
            leg_timeout: leg_timeout.clamp(Duration::from_millis(100), Duration::from_secs(60)),
            first_bytes: 16 << 10,
            // 1 MiB measures a gigabit link to ~10% in ~8 ms; more only costs the 2-core
            // supervisor CPU when many workers join at once (it showed in the reissue tail).
            max_bytes: PROBE_MAX_BYTES,
            grow_below: Duration::from_millis(50),
            pings: 3,
        }
    }
}

/// The largest leg the supervisor asks for (the protocol allows up to
/// [`proto::MAX_LINK_PROBE_BYTES`]).
pub const PROBE_MAX_BYTES: u64 = 1 << 20;

/// After a probe that was cut short (a leg timed out, a ping went unanswered), the next comes
/// this soon at the latest: a link that was briefly cut is not held against a worker for long.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What the connection task should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this control message; report when it leaves with [`Prober::handle_sent`].
    Send {
        nonce: u64,
        msg: SupervisorMsg,
    },
    /// Send this message (report when it leaves), then `bytes` of payload in binary frames of
    /// [`proto::link_chunk`] for `nonce`.
    SendPayload {
        nonce: u64,
        msg: SupervisorMsg,
        bytes: u64,
    },
    /// Stop sending the payload of `nonce`.
    StopPayload {
        nonce: u64,
    },
    Measured(Measurement),
}

/// One probe's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    pub link: Link,
    pub rtt: Duration,
    /// A leg hit its time limit: a figure is a lower bound.
    pub cut_short: bool,
    /// Payload bytes moved, down and up.
    pub bytes: (u64, u64),
    /// From the first ping to the end.
    pub took: Duration,
}

/// Something the worker sent that breaks the probe protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

#[derive(Debug)]
struct Leg {
    nonce: u64,
    bytes: u64,
    /// When its request left (the writer reports it).
    sent: Option<Instant>,
    /// When the supervisor stops waiting for it.
    deadline: Instant,
    /// Up legs: payload bytes arrived so far, and when the last came.
    received: u64,
    last_at: Option<Instant>,
}

#[derive(Debug)]
enum Phase {
    Idle {
        next: Instant,
    },
    Ping {
        nonce: u64,
        sent: Option<Instant>,
        deadline: Instant,
        left: u32,
    },
    Down(Leg),
    Up(Leg),
}

/// Transfer figures of one direction.
#[derive(Debug, Default)]
struct Direction {
    /// Completed legs: bytes and time from request to the end.
    legs: Vec<(u64, Duration)>,
    /// A lower bound from a leg cut short.
    floor: Option<f64>,
    bytes: u64,
}

/// A message or frames of a probe the supervisor gave up on, which may still arrive.
#[derive(Debug, Clone, Copy)]
struct Stale {
    nonce: u64,
    /// Payload bytes of it that may still come.
    bytes: u64,
}

#[derive(Debug)]
pub struct Prober {
    cfg: ProbeConfig,
    phase: Phase,
    next_nonce: u64,
    started: Option<Instant>,
    rtt: Option<Duration>,
    down: Direction,
    up: Direction,
    cut_short: bool,
    stale: Option<Stale>,
    actions: VecDeque<Action>,
}

impl Prober {
    /// A prober whose first probe starts at `now` (a worker that just joined).
    pub fn new(cfg: ProbeConfig, now: Instant) -> Self {
        Self {
            cfg,
            phase: Phase::Idle { next: now },
            next_nonce: 0,
            started: None,
            rtt: None,
            down: Direction::default(),
            up: Direction::default(),
            cut_short: false,
            stale: None,
            actions: VecDeque::new(),
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Prober::handle_timeout`] wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(match &self.phase {
            Phase::Idle { next } => *next,
            Phase::Ping { deadline, .. } => *deadline,
            Phase::Down(leg) | Phase::Up(leg) => leg.deadline,
        })
    }

    /// Whether a probe is under way.
    pub fn is_probing(&self) -> bool {
        !matches!(self.phase, Phase::Idle { .. })
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        match std::mem::replace(&mut self.phase, Phase::Idle { next: now }) {
            Phase::Idle { .. } => {
                self.started = Some(now);
                self.rtt = None;
                self.down = Direction::default();
                self.up = Direction::default();
                self.cut_short = false;
                self.ping(now, self.cfg.pings.max(1));
            }
            Phase::Ping { nonce, .. } => {
                // No answer within the loss bound: nothing measured; the next probe is soon.
                self.stale = Some(Stale { nonce, bytes: 0 });
                self.phase = Phase::Idle {
                    next: now + self.cfg.every.min(RETRY_AFTER),
                };
            }
            Phase::Down(leg) => {
                // Not even the worker's own "what arrived by the limit" came back: no byte is
                // confirmed.
                self.actions
                    .push_back(Action::StopPayload { nonce: leg.nonce });
                self.stale = Some(Stale {
                    nonce: leg.nonce,
                    bytes: 0,
                });
                self.down.floor = Some(0.0);
                self.cut_short = true;
                self.start_leg(now, false, self.cfg.first_bytes);
            }
            Phase::Up(leg) => {
                self.stale = Some(Stale {
                    nonce: leg.nonce,
                    bytes: leg.bytes - leg.received,
                });
                self.up.bytes += leg.received;
                self.up.floor = Some(lower_bound(&leg));
                self.cut_short = true;
                self.finish(now);
            }
        }
    }

    /// The request with `nonce` left at `at`.
    pub fn handle_sent(&mut self, nonce: u64, at: Instant) {
        match &mut self.phase {
            Phase::Ping { nonce: n, sent, .. } if *n == nonce => *sent = Some(at),
            Phase::Down(leg) | Phase::Up(leg) if leg.nonce == nonce => leg.sent = Some(at),
            _ => {}
        }
    }

    /// A probe message from the worker (`LinkPong`, `LinkReceived`, `LinkSent`); other
    /// messages are not the prober's and are ignored.
    pub fn handle_msg(&mut self, now: Instant, msg: &WorkerMsg) -> Result<(), Violation> {
        match *msg {
            WorkerMsg::LinkPong { nonce } => self.pong(now, nonce),
            WorkerMsg::LinkReceived {
                nonce,
                bytes,
                digest,
            } => self.received(now, nonce, bytes, digest),
            WorkerMsg::LinkSent { nonce, bytes } => self.sent(now, nonce, bytes),
            _ => Ok(()),
        }
    }

    /// A binary frame of `len` bytes arrived.
    pub fn handle_binary(&mut self, now: Instant, len: usize) -> Result<(), Violation> {
        if len > proto::LINK_CHUNK_BYTES {
            return Err(Violation(format!(
                "binary frame of {len} bytes; link probe frames are at most {} bytes",
                proto::LINK_CHUNK_BYTES
            )));
        }
        let len = len as u64;
        if let Phase::Up(leg) = &mut self.phase
            && leg.sent.is_some()
        {
            if leg.received + len > leg.bytes {
                return Err(Violation(format!(
                    "link probe {} asked for {} bytes; more arrived",
                    leg.nonce, leg.bytes
                )));
            }
            leg.received += len;
            leg.last_at = Some(now);
            return Ok(());
        }
        match &mut self.stale {
            Some(stale) if stale.bytes >= len => {
                stale.bytes -= len;
                Ok(())
            }
            _ => Err(Violation(proto::ProtoError::Binary.to_string())),
        }
    }

    fn next_nonce(&mut self) -> u64 {
        self.next_nonce += 1;
        self.next_nonce
    }

    fn ping(&mut self, now: Instant, left: u32) {
        let nonce = self.next_nonce();
        self.actions.push_back(Action::Send {
            nonce,
            msg: SupervisorMsg::LinkPing { nonce },
        });
        self.phase = Phase::Ping {
            nonce,
            sent: None,
            deadline: now + self.cfg.leg_timeout,
            left,
        };
    }

    fn rtt(&self) -> Duration {
        self.rtt.unwrap_or_default()
    }

    fn start_leg(&mut self, now: Instant, down: bool, bytes: u64) {
        let nonce = self.next_nonce();
        let timeout_ms = self.cfg.leg_timeout.as_millis() as u64;
        // The worker's limit runs from when it reads the request; its answer then takes half a
        // round trip back. Some slack beyond that for a busy machine.
        let deadline = now + self.cfg.leg_timeout + self.rtt() * 2 + Duration::from_millis(500);
        let leg = Leg {
            nonce,
            bytes,
            sent: None,
            deadline,
            received: 0,
            last_at: None,
        };
        if down {
            self.actions.push_back(Action::SendPayload {
                nonce,
                msg: SupervisorMsg::LinkDown {
                    nonce,
                    bytes,
                    timeout_ms,
                },
                bytes,
            });
            self.phase = Phase::Down(leg);
        } else {
            self.actions.push_back(Action::Send {
                nonce,
                msg: SupervisorMsg::LinkUp {
                    nonce,
                    bytes,
                    timeout_ms,
                },
            });
            self.phase = Phase::Up(leg);
        }
    }

    /// Whether a stale probe's message may still arrive with this nonce (once).
    fn take_stale(&mut self, nonce: u64) -> bool {
        if self.stale.is_some_and(|s| s.nonce == nonce) {
            self.stale = None;
            return true;
        }
        false
    }

    fn unexpected(&self, what: &str, nonce: u64) -> Violation {
        let expected = match &self.phase {
            Phase::Idle { .. } => "no probe is under way".to_owned(),
            Phase::Ping { nonce, .. } => format!("expected a link_pong for probe {nonce}"),
            Phase::Down(leg) => format!("expected a link_received for probe {}", leg.nonce),
            Phase::Up(leg) => format!("expected payload and a link_sent for probe {}", leg.nonce),
        };
        Violation(format!(
            "{what} for link probe {nonce}, which was not asked for ({expected})"
        ))
    }

    fn pong(&mut self, now: Instant, nonce: u64) -> Result<(), Violation> {
        let Phase::Ping {
            nonce: n,
            sent,
            left,
            ..
        } = self.phase
        else {
            return self.stale_or(nonce, "link_pong");
        };
        if n != nonce {
            return self.stale_or(nonce, "link_pong");
        }
        if let Some(sent) = sent {
            let rtt = now.saturating_duration_since(sent);
            self.rtt = Some(self.rtt.map_or(rtt, |r| r.min(rtt)));
        }
        if left > 1 {
            self.ping(now, left - 1);
        } else {
            self.start_leg(now, true, self.cfg.first_bytes);
        }
        Ok(())
    }

    fn stale_or(&mut self, nonce: u64, what: &str) -> Result<(), Violation> {
        if self.take_stale(nonce) {
            Ok(())
        } else {
            Err(self.unexpected(what, nonce))
        }
    }

    fn received(
        &mut self,
        now: Instant,
        nonce: u64,
        bytes: u64,
        digest: u64,
    ) -> Result<(), Violation> {
        let Phase::Down(leg) = &self.phase else {
            return self.stale_or(nonce, "link_received");
        };
        if leg.nonce != nonce {
            return self.stale_or(nonce, "link_received");
        }
        if bytes > leg.bytes {
            return Err(Violation(format!(
                "link_received says {bytes} bytes of probe {nonce} arrived; {} were sent",
                leg.bytes
            )));
        }
        if digest != proto::link_digest(nonce, bytes) {
            return Err(Violation(format!(
                "link_received for probe {nonce}: the digest of {bytes} bytes does not match what was sent"
            )));
        }
        let Phase::Down(mut leg) = std::mem::replace(&mut self.phase, Phase::Idle { next: now })
        else {
            unreachable!("matched above");
        };
        self.down.bytes += bytes;
        if bytes < leg.bytes {
            // The worker's time limit passed: what arrived by then is a lower bound.
            self.actions.push_back(Action::StopPayload { nonce });
            leg.received = bytes;
            leg.last_at = Some(now);
            self.down.floor = Some(lower_bound(&leg));
            self.cut_short = true;
            self.start_leg(now, false, self.cfg.first_bytes);
            return Ok(());
        }
        let took = leg
            .sent
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        self.down.legs.push((bytes, took));
        match self.grow(bytes, took) {
            Some(next) => self.start_leg(now, true, next),
            None => self.start_leg(now, false, self.cfg.first_bytes),
        }
        Ok(())
    }

    fn sent(&mut self, now: Instant, nonce: u64, bytes: u64) -> Result<(), Violation> {
        let Phase::Up(leg) = &self.phase else {
            return self.stale_or(nonce, "link_sent");
        };
        if leg.nonce != nonce {
            return self.stale_or(nonce, "link_sent");
        }
        if bytes != leg.received {
            return Err(Violation(format!(
                "link_sent says {bytes} bytes of probe {nonce} were sent; {} arrived",
                leg.received
            )));
        }
        let Phase::Up(leg) = std::mem::replace(&mut self.phase, Phase::Idle { next: now }) else {
            unreachable!("matched above");
        };
        self.up.bytes += bytes;
        if bytes < leg.bytes {
            self.up.floor = Some(lower_bound(&leg));
            self.cut_short = true;
            self.finish(now);
            return Ok(());
        }
        let took = match (leg.sent, leg.last_at) {
            (Some(s), Some(l)) => l.saturating_duration_since(s),
            _ => Duration::ZERO,
        };
        self.up.legs.push((bytes, took));
        match self.grow(bytes, took) {
            Some(next) => self.start_leg(now, false, next),
            None => self.finish(now),
        }
        Ok(())
    }

    /// The next leg's size after one of `bytes` that took `took`, or `None` when this one was
    /// long enough to measure by (or the largest).
    fn grow(&self, bytes: u64, took: Duration) -> Option<u64> {
        let transfer = took.saturating_sub(self.rtt());
        (transfer < self.cfg.grow_below && bytes < self.cfg.max_bytes)
            .then(|| (bytes * 4).min(self.cfg.max_bytes))
    }

    fn finish(&mut self, now: Instant) {
        let rtt = self.rtt();
        let down = figure(&self.down, rtt);
        let up = figure(&self.up, rtt);
        self.actions.push_back(Action::Measured(Measurement {
            link: Link {
                up_kbps: up * 8.0 / 1000.0,
                down_kbps: down * 8.0 / 1000.0,
            },
            rtt,
            cut_short: self.cut_short,
            bytes: (self.down.bytes, self.up.bytes),
            took: self
                .started
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
        }));
        let wait = if self.cut_short {
            self.cfg.every.min(RETRY_AFTER)
        } else {
            self.cfg.every
        };
        self.phase = Phase::Idle { next: now + wait };
    }
}

/// Bytes a second of a leg cut short: what arrived over the whole time it had. Never more than
/// the link's real speed.
fn lower_bound(leg: &Leg) -> f64 {
    match (leg.sent, leg.last_at) {
        (Some(s), Some(l)) if l > s && leg.received > 0 => {
            leg.received as f64 / l.duration_since(s).as_secs_f64()
        }
        _ => 0.0,
    }
}

/// A direction's speed in bytes a second: the last complete leg's bytes over its time less the
/// round trip (the last leg is the largest, and took at least `grow_below` unless it hit the
/// size cap, so the fixed part of its time is small beside the transfer), or what a leg cut
/// short showed, whichever is more.
fn figure(dir: &Direction, rtt: Duration) -> f64 {
    let measured = dir.legs.last().map(|&(bytes, took)| {
        let t = took.as_secs_f64();
        // The round trip may be measured a little long; never let it eat most of the time.
        let transfer = (t - rtt.as_secs_f64()).max(t / 8.0).max(1e-6);
        bytes as f64 / transfer
    });
    match (measured, dir.floor) {
        (Some(m), Some(f)) => m.max(f),
        (Some(m), None) => m,
        (None, Some(f)) => f,
        (None, None) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    //! The probe against a simulated link on a virtual clock: a fixed one-way latency and a
    //! rate each way, a worker that answers as the protocol says.

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A worker behind a link of `down`/`up` bytes a second and `latency` each way.
    struct SimLink {
        latency: Duration,
        down: f64,
        up: f64,
    }

    impl SimLink {
        fn time(&self, bytes: u64, rate: f64) -> Duration {
            Duration::from_secs_f64(bytes as f64 / rate)
        }
    }

    /// Runs one probe to its measurement, answering every action as a worker behind `link`
    /// would. Returns the measurement and the longest time a heartbeat could have waited
    /// behind probe payload going up.
    fn run(cfg: ProbeConfig, link: &SimLink, leg_limit: Option<Duration>) -> Measurement {
        let t0 = Instant::now();
        let mut p = Prober::new(cfg, t0);
        let mut now = t0;
        p.handle_timeout(now);
        for _ in 0..1000 {
            let Some(action) = p.poll_action() else {
                // Nothing to send: time passes to the prober's deadline.
                now = p.poll_timeout().unwrap();
                p.handle_timeout(now);
                continue;
            };
            match action {
                Action::Send { nonce, msg } => {
                    p.handle_sent(nonce, now);
                    match msg {
                        SupervisorMsg::LinkPing { nonce } => {
                            now += link.latency * 2;
                            p.handle_msg(now, &WorkerMsg::LinkPong { nonce }).unwrap();
                        }
                        SupervisorMsg::LinkUp { nonce, bytes, .. } => {
                            let start = now + link.latency;
                            let mut sent = 0;
                            while sent < bytes {
                                let len = (bytes - sent).min(proto::LINK_CHUNK_BYTES as u64);
                                let at = start + link.time(sent + len, link.up) + link.latency;
                                if leg_limit.is_some_and(|l| at > start + l) {
                                    break;
                                }
                                sent += len;
                                now = at;
                                p.handle_binary(now, len as usize).unwrap();
                            }
                            p.handle_msg(now, &WorkerMsg::LinkSent { nonce, bytes: sent })
                                .unwrap();
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                Action::SendPayload { nonce, bytes, .. } => {
                    p.handle_sent(nonce, now);
                    let start = now + link.latency;
                    let mut got = bytes;
                    let mut at = start + link.time(bytes, link.down);
                    if let Some(l) = leg_limit
                        && at > start + l
                    {
                        got = ((link.down * l.as_secs_f64()) as u64)
                            / proto::LINK_CHUNK_BYTES as u64
                            * proto::LINK_CHUNK_BYTES as u64;
                        at = start + l;
                    }
                    now = at + link.latency;
                    let digest = proto::link_digest(nonce, got);
                    p.handle_msg(
                        now,
                        &WorkerMsg::LinkReceived {
                            nonce,
                            bytes: got,
                            digest,
                        },
                    )
                    .unwrap();
                }
                Action::StopPayload { .. } => {}
                Action::Measured(m) => return m,
            }
        }
        panic!("no measurement");
    }

    fn cfg() -> ProbeConfig {
        ProbeConfig::new(Duration::from_secs(600), Duration::from_secs(3))
    }

    fn within(measured_kbps: f64, true_bytes_per_s: f64, tolerance: f64) -> bool {
        let want = true_bytes_per_s * 8.0 / 1000.0;
        (measured_kbps - want).abs() <= want * tolerance
    }

    #[test]
    fn a_slow_link_is_measured_from_one_small_leg_in_about_a_second() {
        // 100 kbit/s each way, 20 ms each way.
        let link = SimLink {
            latency: 20 * MS,
            down: 12_500.0,
            up: 12_500.0,
        };
        let m = run(cfg(), &link, None);
        assert!(within(m.link.down_kbps, link.down, 0.02), "{m:?}");
        assert!(within(m.link.up_kbps, link.up, 0.02), "{m:?}");
        assert_eq!(m.rtt, 40 * MS);
        assert_eq!(m.bytes, (16 << 10, 16 << 10), "one leg each way");
        assert!(m.took < Duration::from_secs(3), "{m:?}");
        assert!(!m.cut_short);
    }

    #[test]
    fn a_fast_link_grows_to_the_largest_leg_and_asymmetry_shows() {
        // 1 Gbit/s down, 100 Mbit/s up, 1 ms each way.
        let link = SimLink {
            latency: MS,
            down: 125e6,
            up: 12.5e6,
        };
        let m = run(cfg(), &link, None);
        assert!(within(m.link.down_kbps, link.down, 0.02), "{m:?}");
        assert!(within(m.link.up_kbps, link.up, 0.02), "{m:?}");
        // Both ways every size up to the 1 MiB cap: 256 KiB takes 2 ms down, 21 ms up (< 50 ms).
        let all: u64 = (0..4).map(|i| (16u64 << 10) << (2 * i)).sum();
        assert_eq!(all, PROBE_MAX_BYTES + (PROBE_MAX_BYTES - (16 << 10)) / 3);
        assert_eq!(m.bytes.0, all);
        assert_eq!(m.bytes.1, all);
    }

    #[test]
    fn a_leg_that_hits_its_limit_gives_a_lower_bound() {
        // 20 kbit/s: the first leg (16 KiB) needs 6.5 s, the limit is 3 s.
        let link = SimLink {
            latency: 5 * MS,
            down: 2_500.0,
            up: 2_500.0,
        };
        let m = run(cfg(), &link, Some(Duration::from_secs(3)));
        assert!(m.cut_short);
        // What arrived within the limit, over the time it took: at most the real speed.
        assert!(m.link.down_kbps <= 20.0 && m.link.up_kbps <= 20.0, "{m:?}");
        assert!(m.link.up_kbps > 10.0, "{m:?}");
    }

    #[test]
    fn bad_answers_are_violations_and_late_ones_of_an_abandoned_leg_are_not() {
        let t0 = Instant::now();
        let mut p = Prober::new(cfg(), t0);
        // Nothing asked for yet.
        assert!(p.handle_binary(t0, 10).is_err());
        assert!(
            p.handle_msg(t0, &WorkerMsg::LinkPong { nonce: 1 })
                .unwrap_err()
                .0
                .contains("not asked for")
        );
        let mut p = Prober::new(cfg(), t0);
        p.handle_timeout(t0);
        let Some(Action::Send { nonce, .. }) = p.poll_action() else {
            panic!()
        };
        p.handle_sent(nonce, t0);
        assert!(
            p.handle_msg(t0, &WorkerMsg::LinkPong { nonce: nonce + 7 })
                .is_err()
        );
        // A pong that never comes: the probe is abandoned, a late pong is tolerated once.
        p.handle_timeout(t0 + Duration::from_secs(3));
        assert!(!p.is_probing());
        assert!(p.poll_timeout().unwrap() <= t0 + Duration::from_secs(34));
        assert!(p.handle_msg(t0, &WorkerMsg::LinkPong { nonce }).is_ok());
        assert!(p.handle_msg(t0, &WorkerMsg::LinkPong { nonce }).is_err());

        // A down leg: a wrong digest, more bytes than sent, an oversized frame.
        let mut p = Prober::new(cfg(), t0);
        p.handle_timeout(t0);
        for _ in 0..3 {
            let Some(Action::Send { nonce, .. }) = p.poll_action() else {
                panic!()
            };
            p.handle_sent(nonce, t0);
            p.handle_msg(t0, &WorkerMsg::LinkPong { nonce }).unwrap();
        }
        let Some(Action::SendPayload { nonce, bytes, .. }) = p.poll_action() else {
            panic!()
        };
        let wrong = WorkerMsg::LinkReceived {
            nonce,
            bytes,
            digest: proto::link_digest(nonce, bytes) ^ 1,
        };
        assert!(p.handle_msg(t0, &wrong).unwrap_err().0.contains("digest"));
        let more = WorkerMsg::LinkReceived {
            nonce,
            bytes: bytes + 8,
            digest: proto::link_digest(nonce, bytes + 8),
        };
        assert!(p.handle_msg(t0, &more).is_err());
        assert!(p.handle_binary(t0, proto::LINK_CHUNK_BYTES + 1).is_err());
        assert!(
            p.handle_binary(t0, 100).is_err(),
            "binary during a down leg"
        );
    }

    #[test]
    fn an_up_leg_beyond_what_was_asked_or_misreported_is_a_violation() {
        let t0 = Instant::now();
        let link = SimLink {
            latency: MS,
            down: 1e6,
            up: 1e6,
        };
        let mut p = Prober::new(cfg(), t0);
        p.handle_timeout(t0);
        // Answer pings and down legs until the first up leg is asked for.
        let (nonce, bytes) = loop {
            match p.poll_action().unwrap() {
                Action::Send {
                    nonce,
                    msg: SupervisorMsg::LinkPing { .. },
                } => {
                    p.handle_sent(nonce, t0);
                    p.handle_msg(t0 + MS, &WorkerMsg::LinkPong { nonce })
                        .unwrap();
                }
                Action::SendPayload { nonce, bytes, .. } => {
                    p.handle_sent(nonce, t0);
                    let at = t0 + link.time(bytes, link.down) * 10;
                    let digest = proto::link_digest(nonce, bytes);
                    p.handle_msg(
                        at,
                        &WorkerMsg::LinkReceived {
                            nonce,
                            bytes,
                            digest,
                        },
                    )
                    .unwrap();
                }
                Action::Send {
                    nonce,
                    msg: SupervisorMsg::LinkUp { bytes, .. },
                } => {
                    p.handle_sent(nonce, t0);
                    break (nonce, bytes);
                }
                other => panic!("{other:?}"),
            }
        };
        for _ in 0..bytes / proto::LINK_CHUNK_BYTES as u64 {
            p.handle_binary(t0, proto::LINK_CHUNK_BYTES).unwrap();
        }
        assert!(
            p.handle_binary(t0, 1)
                .unwrap_err()
                .0
                .contains("more arrived")
        );
        let lie = WorkerMsg::LinkSent {
            nonce,
            bytes: bytes * 2,
        };
        assert!(p.handle_msg(t0, &lie).is_err());
        assert!(
            p.handle_msg(t0, &WorkerMsg::LinkSent { nonce: 99, bytes })
                .is_err()
        );
    }
}
